"""What the planner asks the backends, with no run: estimates, instance types, the trade-off."""
from __future__ import annotations

import pytest

from sciops.accounting import costs
from sciops.clusters import backend_class, backend_classes
from sciops.run.config import DEFAULT_MEMORY_MB

PC = backend_class("parallelcluster")


def test_a_cluster_made_for_the_run_is_priced_per_node_by_hand():
    est = PC.estimate_for(10000, 2.2, nodes=4, instance_type="c5.xlarge", region="us-east-1", memory_mb=2048)
    # c5.xlarge has 4 vCPUs and 8 GiB → 3 tasks of 2 GiB per node (1 GiB kept), 12 at once
    assert (est["backend"], est["nodes"], est["instance_type"]) == ("parallelcluster", 4, "c5.xlarge")
    assert est["tasks_per_node"] == 3 and est["concurrent_tasks"] == 12
    assert est["compute_s"] == pytest.approx(10000 * 2.2 / 12, abs=0.1)
    # each node billed for its 300 s boot and its share; the head node (t3.medium) for creation + boot + compute
    assert est["cost_usd"] == pytest.approx(4 * 0.17 * (300 + est["compute_s"]) / 3600
                                            + 0.0416 * (900 + 300 + est["compute_s"]) / 3600, abs=1e-3)
    assert est["duration_s"] == pytest.approx(900 + 300 + est["compute_s"], abs=0.1)
    # the defaults: the cluster parameter's instance types, the memory parameter's default
    assert DEFAULT_MEMORY_MB == 2048 and PC.estimate_for(10000, 2.2, nodes=4) == est


@pytest.mark.parametrize("name", [n for n, cls in backend_classes().items() if not cls.priced_per_instance_type])
def test_the_other_backends_are_priced_by_the_task_hour(name):
    est = backend_class(name).estimate_for(3600, 2.0, nodes=4, hourly_rate_usd=0.5, instance_type="c5.xlarge",
                                           region="eu-west-1", memory_mb=4096)
    assert est == {"backend": name, "concurrent_tasks": 4, "task_hours": 2.0, "duration_s": 1800.0, "cost_usd": 1.0}


def test_the_tradeoff_picks_the_cheapest_within_the_deadline():
    out = PC.tradeoff(10000, 2.2, region="us-east-1", instance_types=["c5.xlarge", "c5.2xlarge"],
                      node_counts=[1, 4], deadline_s=3600)
    assert {(o["instance_type"], o["nodes"]) for o in out["options"]} == {
        ("c5.xlarge", 1), ("c5.xlarge", 4), ("c5.2xlarge", 1), ("c5.2xlarge", 4)}
    within = [o for o in out["options"] if o["meets_deadline"]]
    assert within and out["best"]["pick"] == "cheapest within the deadline"
    assert out["best"]["cost_usd"] == min(o["cost_usd"] for o in within)
    assert out["create_seconds"] == costs.DEFAULT_CREATE_SECONDS
    with pytest.raises(costs.PlannerError, match="fits none of c5.large"):
        PC.tradeoff(10, 2.0, instance_types=["c5.large"], memory_mb=8192)


def test_unknown_instance_types_and_regions_name_the_known_ones():
    assert "c5.xlarge" in PC.check_instance_types(None, "us-east-1")
    with pytest.raises(costs.PlannerError, match="unknown instance type 'z9.huge' in us-east-1.*c5.xlarge"):
        PC.check_instance_types(["z9.huge"], "us-east-1")
    with pytest.raises(costs.PlannerError, match="no prices for region 'mars-north-1'"):
        PC.check_instance_types(None, "mars-north-1")


def test_the_registry_names_the_backend_priced_per_instance_type():
    """The planner's instance types × node counts are asked of the backend priced per instance type."""
    from sciops.clusters import instance_priced_backend

    assert instance_priced_backend() is PC
    assert not backend_class("local").priced_per_instance_type
