"""What a ParallelCluster would take and cost: one shape (:func:`estimate`, the backend's
``estimate_for``), and the what-if planner's every instance type × node count (:func:`tradeoff`).

The shapes are :mod:`.shapes`', the prices ``sciops.accounting.costs``' table.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sciops.accounting.costs import (DEFAULT_BOOT_SECONDS, DEFAULT_CREATE_SECONDS, PlannerError, load_prices,
                                     nodes_estimate, on_demand_price)
from sciops.clusters.parallelcluster.settings import with_defaults
from sciops.clusters.parallelcluster.shapes import INSTANCE_TYPES, fits, tasks_per_node

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

#: Node counts the planner compares when none are given.
PLANNER_NODES = (1, 2, 4, 8, 16, 32)
#: The region the planner prices in when none is given.
DEFAULT_REGION = "us-east-1"


def estimate(images: int, seconds_per_image: float, *, nodes: int = 1, instance_type: str | None = None,
             head_node_type: str | None = None, region: str | None = None, memory_mb: int | None = None,
             prices: dict[str, Any] | None = None) -> dict[str, Any]:
    """Duration and cost of ``images`` at ``seconds_per_image`` (task-seconds) on ``nodes`` compute nodes.

    Nodes of ``instance_type`` (tasks per node from its vCPUs and memory), each billed for its
    boot and its share of the work, plus the head node for creation + boot + compute time, at
    on-demand prices. The types default to the ``cluster`` parameter's defaults, ``region`` to
    :data:`DEFAULT_REGION`, ``memory_mb`` (per task) to the ``memory`` parameter's default.
    """
    from sciops.run.config import DEFAULT_MEMORY_MB

    shape = with_defaults({"compute_instance_type": instance_type, "head_node_instance_type": head_node_type})
    instance_type, head_node_type = shape["compute_instance_type"], shape["head_node_instance_type"]
    region = region or DEFAULT_REGION
    prices = prices or load_prices()
    est = nodes_estimate(images, seconds_per_image, nodes=nodes,
                         tasks_per_node=tasks_per_node(instance_type,
                                                       DEFAULT_MEMORY_MB if memory_mb is None else memory_mb),
                         node_usd_per_hour=on_demand_price(prices, region, instance_type),
                         head_usd_per_hour=on_demand_price(prices, region, head_node_type))
    return {"nodes": est.pop("nodes"), "instance_type": instance_type, **est, "prices_as_of": prices.get("as_of")}


def priced_types(region: str, prices: dict[str, Any] | None = None) -> list[str]:
    """Compute instance types the planner can price in ``region`` (known shape and an on-demand price)."""
    prices = prices or load_prices()
    return sorted(t for t in (prices.get("on_demand_usd_per_hour", {}).get(region) or {}) if t in INSTANCE_TYPES)


def check_types(instance_types: Iterable[str] | None, region: str,
                prices: dict[str, Any] | None = None) -> list[str]:
    """The instance types asked for (all priced ones if none), or a :class:`PlannerError` naming the known ones."""
    prices = prices or load_prices()
    known = priced_types(region, prices)
    if not known:
        regions = ", ".join(sorted(prices.get("on_demand_usd_per_hour", {})))
        raise PlannerError(f"no prices for region {region!r} (as of {prices.get('as_of')}); priced regions: {regions}."
                           " Add the region to the sciops_prices Variable")
    wanted = list(dict.fromkeys(instance_types or known))
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise PlannerError(f"unknown instance type {', '.join(map(repr, unknown))} in {region}: the planner knows "
                           f"{', '.join(known)} (prices as of {prices.get('as_of')})")
    return wanted


def tradeoff(images: int, seconds_per_image: float, *, region: str = DEFAULT_REGION,
             instance_types: Iterable[str] | None = None, node_counts: Iterable[int] = PLANNER_NODES,
             memory_mb: int | None = None, deadline_s: float | None = None,
             prices: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every instance type × node count: duration and cost (:func:`estimate`), and the pick.

    The pick is the cheapest option that finishes within ``deadline_s`` (the fastest one if
    none does, flagged), else the cheapest overall. Unknown regions and instance types are
    a :class:`PlannerError` naming what is known. ``memory_mb``: per task (None: the
    ``memory`` parameter's default).
    """
    from sciops.run.config import DEFAULT_MEMORY_MB

    memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    prices = prices or load_prices()
    wanted = check_types(instance_types, region, prices)
    counts = sorted({int(n) for n in node_counts})
    if not counts or counts[0] < 1:
        raise PlannerError("node counts must be whole numbers of at least 1, e.g. 1,2,4,8")
    options = []
    for itype in wanted:
        if tasks_per_node(itype, memory_mb) < 1 or not fits(itype, memory_mb):
            continue
        for n in counts:
            est = estimate(images, seconds_per_image, nodes=n, instance_type=itype, region=region,
                           memory_mb=memory_mb, prices=prices)
            options.append({"label": itype, "instance_type": itype, "nodes": n,
                            "concurrent_tasks": est["concurrent_tasks"], "duration_s": est["duration_s"],
                            "cost_usd": est["cost_usd"],
                            "meets_deadline": None if deadline_s is None else est["duration_s"] <= deadline_s})
    if not options:
        raise PlannerError(f"a task of {memory_mb} MB fits none of {', '.join(wanted)}; lower the memory or add "
                           "larger instance types")
    options.sort(key=lambda o: (o["cost_usd"], o["duration_s"]))
    within = [o for o in options if o["meets_deadline"] is not False]
    best = within[0] if within else min(options, key=lambda o: (o["duration_s"], o["cost_usd"]))
    best = dict(best, pick="cheapest within the deadline" if deadline_s and within
                else "fastest (none meets the deadline)" if deadline_s else "cheapest")
    return {"options": options, "best": best, "region": region, "prices_as_of": prices.get("as_of"),
            "create_seconds": DEFAULT_CREATE_SECONDS, "boot_seconds": DEFAULT_BOOT_SECONDS}
