"""The ParallelCluster lifecycle at the ``pcluster`` command boundary.

``tests/fixtures/pcluster/fake_pcluster.py`` answers like pcluster 3 (its documented JSON
shapes) with clusters kept in a file; the real pcluster is checked by the schema and
--dryrun tests (tests/integration/test_pcluster_*.py).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from sciops.clusters import parallelcluster as pc
from sciops.errors import ClusterError
from sciops.clusters.sweeper import sweep

BASE = dict(region="eu-west-1", subnet_id="subnet-0123456789abcdef0", key_name="lab-key",
            custom_ami="ami-0123456789abcdef0")


def make_config(tmp_path, run_id="manual__2026-11-27T01:00:00+00:00", dag_id="fiji_project"):
    settings, problems = pc.settings_from(BASE, bucket="imaging", run_id=run_id, project="cells", dag_id=dag_id)
    assert problems == []
    path = tmp_path / f"{pc.cluster_name(run_id)}.yaml"
    path.write_text(yaml.safe_dump(pc.build_config(settings)))
    return pc.cluster_name(run_id), str(path)


def test_create_wait_ready_then_delete_wait_gone(fake_pcluster, tmp_path):
    from sciops.triggers.cluster import PClusterStateTrigger

    cli = pc.PCluster("eu-west-1")
    name, config = make_config(tmp_path)
    assert cli.describe(name)["state"] == pc.GONE
    cli.create(name, config)
    assert cli.describe(name)["state"] == pc.CREATING

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    ready = asyncio.run(first_event(PClusterStateTrigger(name, "eu-west-1", pc.READY)))
    assert ready["ok"] and ready["state"] == pc.READY and ready["head_node_ip"] == "127.0.0.1"
    assert ready["tags"]["sciops:run-id"] == "manual__2026-11-27T01:00:00+00:00"
    # a retried create finds the cluster by name: describe says it is ready, so nothing else is made
    assert cli.describe(name)["state"] == pc.READY
    with pytest.raises(ClusterError, match="already exists"):
        cli.create(name, config)
    assert len(cli.list()) == 1

    cli.delete(name)
    assert cli.describe(name)["state"] == pc.DELETING
    gone = asyncio.run(first_event(PClusterStateTrigger(name, "eu-west-1", pc.GONE)))
    assert gone["ok"] and gone["state"] == pc.GONE
    assert cli.delete(name)["state"] == pc.GONE  # deleting again is harmless
    # serialize round trip (the triggerer rebuilds it from this)
    path, kwargs = PClusterStateTrigger(name, "eu-west-1", pc.GONE, aws_conn_id="x").serialize()
    assert path == "sciops.triggers.cluster.PClusterStateTrigger"
    assert PClusterStateTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize("outcome,want", [("CREATE_FAILED", pc.READY), ("DELETE_FAILED", pc.GONE)])
def test_failed_states_end_the_wait(fake_pcluster, tmp_path, outcome, want):
    from sciops.triggers.cluster import PClusterStateTrigger

    fake_pcluster.set(create_outcome=outcome if want == pc.READY else "CREATE_COMPLETE", delete_outcome=outcome)
    cli = pc.PCluster("eu-west-1")
    name, config = make_config(tmp_path)
    cli.create(name, config)
    if want == pc.GONE:
        for _ in range(3):
            cli.describe(name)
        cli.delete(name)

    async def first_event():
        async for event in PClusterStateTrigger(name, "eu-west-1", want).run():
            return event.payload

    event = asyncio.run(first_event())
    assert not event["ok"] and event["status"] == outcome


def test_credentials_go_in_the_environment_not_argv(fake_pcluster, tmp_path):
    cli = pc.PCluster("eu-west-1", env={"AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    cli.list()
    call = fake_pcluster.state()["calls"][-1]
    assert call["has_credentials"] and "s3cr3t" not in json.dumps(call["argv"])


def test_sweeper_deletes_only_orphans(fake_pcluster, tmp_path):
    cli = pc.PCluster("eu-west-1")
    runs = {"manual__running": True, "manual__finished": False, "scheduled__failed": False}
    names = {}
    for run_id in runs:
        names[run_id], config = make_config(tmp_path, run_id)
        cli.create(names[run_id], config)
    # a cluster someone else made, without SciOps' tags
    foreign = tmp_path / "foreign.yaml"
    cfg = yaml.safe_load(Path(make_config(tmp_path, "manual__foreign")[1]).read_text())
    cfg["Tags"] = [{"Key": "owner", "Value": "someone"}]
    foreign.write_text(yaml.safe_dump(cfg))
    cli.create("lab-own-cluster", str(foreign))
    asked = []

    def is_active(dag_id, run_id):
        asked.append((dag_id, run_id))
        return runs[run_id]

    dry = sweep(cli, is_active, dry_run=True)
    assert sorted(r["run_id"] for r in dry["would_delete"]) == ["manual__finished", "scheduled__failed"]
    assert dry["deleted"] == [] and all(cli.describe(n)["state"] != pc.DELETING for n in names.values())
    assert [r["name"] for r in dry["not_ours"]] == ["lab-own-cluster"]
    assert ("fiji_project", "manual__running") in asked

    done = sweep(cli, is_active)
    assert sorted(r["run_id"] for r in done["deleted"]) == ["manual__finished", "scheduled__failed"]
    assert [r["run_id"] for r in done["kept"]] == ["manual__running"]
    assert cli.describe(names["manual__finished"])["state"] == pc.DELETING
    assert cli.describe(names["manual__running"])["state"] in (pc.CREATING, pc.READY)
    assert cli.describe("lab-own-cluster")["state"] in (pc.CREATING, pc.READY)
    # the next pass does not ask again for clusters already being deleted
    assert len(sweep(cli, is_active)["deleting"]) == 2


def test_settings_from_a_runs_cluster_parameter():
    s, problems = pc.settings_from({**BASE, "spot": True, "spot_max_price": 0.2, "max_count": 8}, bucket="b",
                                   run_id="r", project="p")
    assert problems == [] and s.spot and s.max_count == 8 and s.tags == {"sciops:dag-id": "fiji_project"}
    _, problems = pc.settings_from({"region": "eu-west-1"}, bucket="b", run_id="r", project="p")
    assert {"cluster.subnet_id", "cluster.key_name", "cluster.custom_ami"} == set(dict(problems))
    # keys and types are the model's (sciops.run.config.ClusterSettings): named before any of the above
    from sciops.run import config
    from sciops.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        config.build({"project": "p", "backend": "parallelcluster",
                      "cluster": {"region": "eu-west-1", "max_count": "many", "min_count": -1, "typo": 1}})
    fields = dict(err.value.problems)
    assert {"cluster.typo", "cluster.max_count", "cluster.min_count"} <= set(fields), fields
    assert "unknown setting; known: region, subnet_id" in fields["cluster.typo"]
    assert fields["cluster.min_count"].startswith("must be at least 0 (got -1): compute nodes kept running")


def test_dryrun_output_is_read(tmp_path):
    assert pc.parse_dryrun(1, json.dumps({"message": "Request would have succeeded, but DryRun flag is set."})) == []
    bad = {"message": "Invalid cluster configuration.", "configurationValidationErrors": [
        {"level": "ERROR", "type": "InstanceTypeValidator", "message": "The instance type 'c5.nope' is not supported."}]}
    assert pc.parse_dryrun(1, json.dumps(bad)) == [
        "ERROR InstanceTypeValidator: The instance type 'c5.nope' is not supported."]
