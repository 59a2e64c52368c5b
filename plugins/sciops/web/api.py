"""The FastAPI app Airflow's API server serves under ``/sciops``: JSON routes and the HTML pages.

Every route is behind Airflow's authentication (:mod:`sciops.web.auth`) and answers only
about runs of DAGs the requesting user may read. The planner's arithmetic is in
:mod:`sciops.web.planner`, the pages' HTML in :mod:`sciops.web.pages`.
"""
from __future__ import annotations

import json
import statistics
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

from sciops.run.config import DEFAULT_MEMORY_MB
from sciops.run.values import MAX_TASK_MB
from sciops.web import pages, planner
from sciops.web.auth import Readable, User, authenticated, may_read_runs

# Imports inside functions here are deliberate: Airflow's plugin manager imports the plugin in every
# Airflow process (scheduler, workers, triggerer, dag-processor); the ledger, charts and planner code load
# only when a page or route is asked for.

#: The DAG whose runs use the storage root: who may read its runs may read where they are.
STORAGE_DAG = "fiji_project"

app = FastAPI(title="SciOps", description="Runs, costs and the what-if planner", dependencies=[authenticated()])


def _rows(readable: set[str], project: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    from sciops.accounting import ledger

    out = []
    for r in ledger.rows(project=project or None, limit=limit, dag_ids=readable):
        r = dict(r)
        for key in ("params", "phases", "cost"):
            r[key] = json.loads(r[key]) if r.get(key) else {}
        out.append(r)
    return out


@app.get("/api/runs")
def api_runs(project: str | None = None, limit: int = Query(200, ge=1, le=5000),
             readable: set[str] = Readable) -> dict[str, Any]:
    return {"runs": _rows(readable, project, limit)}


def summary(readable: set[str], project: str | None = None) -> dict[str, Any]:
    """Every run's overview columns (no JSON columns: 10,000 runs read in a fraction of a second)."""
    from sciops.accounting import ledger

    rows = ledger.rows(project=project or None, limit=None, dag_ids=readable, columns=ledger.OVERVIEW_COLUMNS)
    per_run = sorted(rows, key=lambda r: r["started_at"] or 0)
    by_macro: dict[str, list[float]] = {}
    for r in rows:
        if r.get("cost_per_image_usd") is not None:
            by_macro.setdefault(r["macro"] or "?", []).append(r["cost_per_image_usd"])
    return {"project": project, "runs": len(rows), "per_run": per_run,
            "cost_per_image_by_macro": {m: {"median_usd": statistics.median(v), "runs": len(v)}
                                        for m, v in sorted(by_macro.items())},
            "projects": sorted({r["project"] for r in rows if r.get("project")})}


@app.get("/api/summary")
def api_summary(project: str | None = None, readable: set[str] = Readable) -> dict[str, Any]:
    return summary(readable, project)


@app.get("/api/planner")
def api_planner(macro: str = Query(..., description="macro name or sha256"),
                images: int = Query(..., ge=1, le=planner.MAX_IMAGES),
                nodes: int = Query(1, ge=1, le=planner.MAX_NODES), instance_type: str | None = None,
                backend: str = Query("parallelcluster"), region: str = "us-east-1",
                memory_mb: int = Query(DEFAULT_MEMORY_MB, ge=256, le=MAX_TASK_MB),
                hourly_rate_usd: float = Query(0.0, ge=0, le=planner.MAX_HOURLY_RATE_USD, allow_inf_nan=False),
                project: str | None = None,
                readable: set[str] = Readable) -> dict[str, Any]:
    """What N nodes of type X would take and cost for ``images`` images, from past runs of the macro."""
    return planner.estimate(macro, images, nodes, instance_type, backend, region, memory_mb, hourly_rate_usd,
                            project, readable)


@app.get("/api/tradeoff")
def api_tradeoff(macro: str = Query(..., description="macro name or sha256"),
                 images: int = Query(..., ge=1, le=planner.MAX_IMAGES),
                 deadline_h: float | None = Query(None, gt=0, le=planner.MAX_DEADLINE_H, allow_inf_nan=False),
                 region: str = "us-east-1",
                 instance_types: str = Query("", max_length=1000, description="comma-separated; empty = every priced "
                                                                              "type"),
                 nodes: str = Query("1,2,4,8,16,32", max_length=400, description="comma-separated node counts"),
                 memory_mb: int = Query(DEFAULT_MEMORY_MB, ge=256, le=MAX_TASK_MB), project: str | None = None,
                 deadline_min: float | None = Query(None, gt=0, le=planner.MAX_DEADLINE_H * 60, allow_inf_nan=False,
                                                    description="the deadline in minutes (instead of deadline_h)"),
                 slots: int = Query(0, ge=0, le=planner.MAX_NODES, description="the lab's own cluster: tasks at once"),
                 task_hour_usd: float = Query(0.0, ge=0, le=planner.MAX_HOURLY_RATE_USD, allow_inf_nan=False,
                                              description="the lab's own cluster: USD per task-hour"),
                 readable: set[str] = Readable) -> dict[str, Any]:
    """Time and cost over instance types × node counts (and the own cluster), the cheapest option within the
    deadline, and the Pareto front (``front``: the options no other beats on both time and cost)."""
    found = planner.past(macro, project, readable)
    deadline_h = deadline_min / 60 if deadline_min else deadline_h
    return {"macro": macro, "images": images, "from_runs": found["runs"],
            "seconds_per_image": found["seconds_per_image"],
            **planner.tradeoff(images, found["seconds_per_image"], deadline_h, region, instance_types, nodes,
                               memory_mb, slots, task_hour_usd)}


@app.get("/api/storage")
def api_storage(user=User) -> dict[str, Any]:
    """The storage root runs use and the others a run may name (``sciops`` asks this instead of making the
    scientist repeat the server's settings). Names only: no connection, no credential. For users who may read
    fiji_project's runs."""
    from sciops.settings import setting

    if not may_read_runs(user, {STORAGE_DAG}):
        raise HTTPException(403, f"your Airflow role may not read the runs of DAG {STORAGE_DAG}")
    root = setting("SCIOPS_STORAGE_ROOT").strip().rstrip("/")
    others = [r.rstrip("/") for r in setting("SCIOPS_ALLOWED_STORAGE_ROOTS")]
    return {"storage_root": root, "allowed_storage_roots": [r for r in dict.fromkeys(others) if r != root]}


@app.get("/api/runs/{dag_id}/{run_id}/progress")
def api_run_progress(dag_id: str, run_id: str, user=User) -> dict[str, Any]:
    """A run while it goes: Airflow's state, and from its run folder (where this server sees it) the phase,
    images done / failed of the total, ETA and spend (what ``sciops run --wait`` shows)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from sciops.cli.progress import run_progress

    if not may_read_runs(user, {dag_id}):
        raise HTTPException(403, f"your Airflow role may not read the runs of DAG {dag_id}")
    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dr is None:
            raise HTTPException(404, f"no run {run_id} of DAG {dag_id}")
        state, conf = getattr(dr.state, "value", dr.state), dict(dr.conf or {})
    return {"run_id": run_id, "state": state, **run_progress(conf, run_id)}


@app.get("/dashboard", response_class=HTMLResponse)
def dashboard(project: str | None = None, macro: str | None = None,
              images: int | None = Query(None, ge=1, le=planner.MAX_IMAGES),
              deadline_h: float | None = Query(None, gt=0, le=planner.MAX_DEADLINE_H, allow_inf_nan=False),
              region: str | None = None, memory_mb: int | None = Query(None, ge=256, le=MAX_TASK_MB),
              instance_types: str | None = Query(None, max_length=1000), nodes: str | None = Query(None, max_length=400),
              deadline_min: float | None = Query(None, gt=0, le=planner.MAX_DEADLINE_H * 60, allow_inf_nan=False),
              slots: int | None = Query(None, ge=0, le=planner.MAX_NODES),
              task_hour_usd: float | None = Query(None, ge=0, le=planner.MAX_HOURLY_RATE_USD, allow_inf_nan=False),
              plan: str | None = None, readable: set[str] = Readable) -> str:
    if deadline_min is None and deadline_h:   # a link from before deadlines were in minutes
        deadline_min = deadline_h * 60
    q = {"project": project, "macro": macro, "images": images, "deadline_min": deadline_min, "region": region,
         "memory_mb": memory_mb, "instance_types": instance_types, "nodes": nodes, "slots": slots,
         "task_hour_usd": task_hour_usd, "plan": plan}
    return pages.dashboard(summary(readable, project or None), project, q, readable)


@app.get("/runs/{dag_id}/{run_id}/report")
def run_report(dag_id: str, run_id: str, user=User):
    """The run's report.html: only a file the ledger recorded for that run is ever served.

    A run without a report (refused in validate, still running, or unknown) gets a readable
    page saying which, not raw JSON. A DAG whose runs the user may not read is 403, whether
    or not the run exists (no probing for run ids).
    """
    from sciops.run.project import safe_run_id

    readable = may_read_runs(user, {dag_id})
    if not readable:
        return HTMLResponse(pages.forbidden(dag_id), status_code=403)
    from sciops.accounting import ledger

    row = ledger.find(dag_id, run_id, safe_run_id(run_id))
    if row and row.get("report"):
        try:
            return FileResponse(row["report"], media_type="text/html")
        except (OSError, RuntimeError):
            pass
    if row and row["status"] == "refused":
        return HTMLResponse(pages.refused(run_id, row))
    return HTMLResponse(pages.no_report(run_id, row), status_code=404)
