"""The what-if planner: duration and cost of a number of images, from the macro's past runs.

``estimate``: N nodes of type X (``/sciops/api/planner``); ``tradeoff``: instance types × node
counts, and the cheapest option within a deadline (``/sciops/api/tradeoff`` and the dashboard's
planner form). Both start from ``past``: the measured seconds per image of the macro's
successful runs that the requesting user may read. Errors are ``HTTPException`` s whose detail
is a sentence (the routes answer it; the dashboard shows it).
"""
from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from sciops.accounting.costs import PlannerError
from sciops.clusters import backend_class, instance_priced_backend

# Imports inside functions here are deliberate: Airflow's plugin manager imports the plugin in every
# Airflow process (scheduler, workers, triggerer, dag-processor); the ledger, charts and planner code load
# only when a page or route is asked for.


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


def tradeoff(images: int, seconds_per_image: float, deadline_h: float | None, region: str, instance_types: str,
             nodes: str, memory_mb: int) -> dict[str, Any]:
    try:
        counts = [int(n) for n in nodes.replace(" ", "").split(",") if n]
    except ValueError:
        raise HTTPException(422, f"node counts {nodes!r}: give whole numbers separated by commas, e.g. 1,2,4,8") \
            from None
    types = [t.strip() for t in instance_types.split(",") if t.strip()]
    try:
        return instance_priced_backend().tradeoff(images, seconds_per_image, region=region,
                                                  instance_types=types or None, node_counts=counts,
                                                  memory_mb=memory_mb, deadline_s=deadline_h * 3600 if deadline_h else None)
    except PlannerError as exc:
        raise HTTPException(422, str(exc)) from None
