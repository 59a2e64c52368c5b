"""The what-if planner: duration and cost of a number of images, from the macro's past runs.

``estimate``: N nodes of type X (``/sciops/api/planner``); ``tradeoff``: instance types × node
counts, and the lab's own cluster (its slots at a rate per task-hour) if given, the cheapest option
within a deadline and the Pareto front: the options that no other beats on both time and cost
(``/sciops/api/tradeoff`` and the dashboard's planner form). Both start from ``past``: the measured
seconds per image of the macro's successful runs that the requesting user may read. Errors are ``HTTPException`` s whose detail
is a sentence (the routes answer it; the dashboard shows it).
"""
from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException

from sciops.accounting.costs import PlannerError
from sciops.clusters import backend_class, instance_priced_backend

# Imports inside functions here are deliberate: Airflow's plugin manager imports the plugin in every
# Airflow process (scheduler, workers, triggerer, dag-processor); the ledger, charts and planner code load
# only when a page or route is asked for.


#: What the planner takes (each crossed bound is a 422 naming the field): a plan is for a real project.
MAX_IMAGES = 100_000_000
MAX_NODES = 10_000
MAX_NODE_COUNTS = 32
MAX_INSTANCE_TYPES = 20
MAX_HOURLY_RATE_USD = 10_000.0
MAX_DEADLINE_H = 24 * 366


def check_bounds(images: int, memory_mb: int, hourly_rate_usd: float = 0.0, deadline_h: float | None = None,
                 nodes: int = 1) -> None:
    """HTTPException 422 naming the field whose value is out of the planner's bounds (NaN and infinity too)."""
    from sciops.run.values import MAX_TASK_MB

    def bad(field: str, value: Any, low: float, high: float, low_open: bool = False) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
            (value > low if low_open else value >= low) and value <= high
        return None if ok else (f"{field}: must be {'more than' if low_open else 'at least'} {low:g} and at most "
                                f"{high:g} (got {value!r:.40})")

    problems = [bad("images", images, 1, MAX_IMAGES), bad("memory_mb", memory_mb, 256, MAX_TASK_MB),
                bad("hourly_rate_usd", hourly_rate_usd, 0, MAX_HOURLY_RATE_USD), bad("nodes", nodes, 1, MAX_NODES)]
    if deadline_h is not None:
        problems.append(bad("deadline_h", deadline_h, 0, MAX_DEADLINE_H, low_open=True))
    problems = [p for p in problems if p]
    if problems:
        raise HTTPException(422, "; ".join(problems))


def past(macro: str, project: str | None, readable: set[str]) -> dict[str, Any]:
    from sciops.accounting import ledger

    found = ledger.past_performance(macro_sha256=macro, project=project or None, dag_ids=readable)
    if not found:
        raise HTTPException(404, f"no successful past run of macro {macro!r}: nothing to estimate from; run it once "
                                 "(a small project is enough) and ask again")
    return found


def estimate(macro: str, images: int, nodes: int, instance_type: str | None, backend: str, region: str,
             memory_mb: int, hourly_rate_usd: float, project: str | None, readable: set[str]) -> dict[str, Any]:
    """What N nodes of type X would take and cost for ``images`` images, from past runs of the macro."""
    check_bounds(images, memory_mb, hourly_rate_usd, nodes=nodes)
    try:
        cls = backend_class(backend)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    found = past(macro, project, readable)
    if cls.priced_per_instance_type and instance_type:
        try:
            cls.check_instance_types([instance_type], region)
        except PlannerError as exc:
            raise HTTPException(422, str(exc)) from None
    est = cls.estimate_for(images, found["seconds_per_image"], nodes=nodes, instance_type=instance_type,
                           region=region, memory_mb=memory_mb, hourly_rate_usd=hourly_rate_usd)
    return {"macro": macro, "images": images, "from_runs": found["runs"],
            "seconds_per_image": found["seconds_per_image"], "estimate": est}


def pareto(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The options not both slower and dearer than another (ties: the first kept), fastest first."""
    front: list[dict[str, Any]] = []
    for o in sorted(options, key=lambda o: (o["duration_s"], o["cost_usd"])):
        if not front or o["cost_usd"] < front[-1]["cost_usd"]:
            front.append(o)
    return front


def own_cluster(images: int, seconds_per_image: float, slots: int, task_hour_usd: float,
                deadline_s: float | None) -> dict[str, Any]:
    """The lab's own cluster as an option: ``slots`` tasks at once, each task-hour at ``task_hour_usd``."""
    est = backend_class("existing").estimate_for(images, seconds_per_image, nodes=slots, hourly_rate_usd=task_hour_usd)
    return {"label": "own cluster", "instance_type": f"own cluster ({slots} slots)", "nodes": slots,
            "concurrent_tasks": slots, "duration_s": est["duration_s"], "cost_usd": est["cost_usd"], "own": True,
            "meets_deadline": None if deadline_s is None else est["duration_s"] <= deadline_s}


def tradeoff(images: int, seconds_per_image: float, deadline_h: float | None, region: str, instance_types: str,
             nodes: str, memory_mb: int, slots: int = 0, task_hour_usd: float = 0.0) -> dict[str, Any]:
    """EC2 instance types × node counts (and the own cluster when ``slots``): every option, the pick, the front."""
    check_bounds(images, memory_mb, hourly_rate_usd=task_hour_usd, deadline_h=deadline_h, nodes=max(slots, 1))
    if len(nodes) > 400 or nodes.count(",") >= MAX_NODE_COUNTS:
        raise HTTPException(422, f"nodes: at most {MAX_NODE_COUNTS} node counts, e.g. 1,2,4,8,16,32")
    try:
        counts = [int(n) for n in nodes.replace(" ", "").split(",") if n]
    except ValueError:
        raise HTTPException(422, f"nodes: {nodes!r:.60} is not whole numbers separated by commas, e.g. 1,2,4,8") \
            from None
    if not counts or any(not 1 <= n <= MAX_NODES for n in counts):
        raise HTTPException(422, f"nodes: each node count must be from 1 to {MAX_NODES} (got {nodes!r:.60})")
    types = [t.strip() for t in instance_types.split(",") if t.strip()]
    if len(instance_types) > 1000 or len(types) > MAX_INSTANCE_TYPES:
        raise HTTPException(422, f"instance_types: at most {MAX_INSTANCE_TYPES} instance types")
    deadline_s = deadline_h * 3600 if deadline_h else None
    try:
        out = instance_priced_backend().tradeoff(images, seconds_per_image, region=region,
                                                 instance_types=types or None, node_counts=counts,
                                                 memory_mb=memory_mb, deadline_s=deadline_s)
    except PlannerError as exc:
        raise HTTPException(422, str(exc)) from None
    if slots:
        out["options"] = sorted(out["options"] + [own_cluster(images, seconds_per_image, slots, task_hour_usd,
                                                              deadline_s)],
                                key=lambda o: (o["cost_usd"], o["duration_s"]))
        within = [o for o in out["options"] if o["meets_deadline"] is not False]
        best = within[0] if within else min(out["options"], key=lambda o: (o["duration_s"], o["cost_usd"]))
        out["best"] = dict(best, pick=out["best"]["pick"] if deadline_s is None or within else
                           "fastest (none meets the deadline)")
    out["front"] = pareto(out["options"])
    return out
