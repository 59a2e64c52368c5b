"""Finding a run the way the user names it, and the table ``sciops status`` prints.

A run is named as ``sciops run`` and ``sciops status`` print it (Airflow's run id,
``manual__2026-12-07T04:14:48.128889+00:00``) or as its folder in the storage root
(``manual__2026-12-07T04-14-48.128889-00-00``, :func:`sciops.run.project.safe_run_id`); both
find the same run. A storage root, project or run that is not there is a :class:`Stop` (exit 2)
that says which, never an empty copy.
"""
from __future__ import annotations

from typing import Any

from sciops.cli.api import Airflow
from sciops.cli.follow import timestamp
from sciops.cli.settings import Stop
from sciops.cli.terminal import shown


def same_run(given: str, airflow_run_id: str | None, folder: str | None = None) -> bool:
    """Whether ``given`` (either form) names the run of that Airflow run id (or that folder)."""
    from sciops.run.project import safe_run_id

    names = {n for n in (airflow_run_id, folder) if n}
    if airflow_run_id:
        names.add(safe_run_id(airflow_run_id))
    return given in names or safe_run_id(given) in names


def project_storage(storage, project: str):
    """``storage`` once the root and ``project`` are known to exist there; else a Stop naming what is missing."""
    if storage.is_local and not storage.root.is_dir():
        raise Stop(f"no storage root {shown(storage.url)!r}: the folder does not exist; check --storage-root or "
                   "SCIOPS_STORAGE_ROOT")
    projects = storage.projects()
    if project not in projects:
        raise Stop(f"no project {shown(project)!r} in {shown(storage.url)}; `sciops ls` lists the "
                   f"{len(projects)} there")
    return storage


def run_folder(storage, project: str, run_id: str) -> str | None:
    """The folder under ``output/`` of the run named ``run_id`` (either form); None when there is none."""
    from sciops.run.project import safe_run_id

    runs = storage.runs(project)
    folder = run_id if run_id in runs else safe_run_id(run_id)
    return folder if folder in runs else None


def missing_run(storage, project: str, run_id: str) -> Stop:
    runs = storage.runs(project)
    newest = ", ".join(shown(r) for r in runs[-3:]) or "none yet"
    return Stop(f"project {shown(project)!r} has no run {shown(run_id)!r} in {shown(storage.url)} (newest: {newest}); "
                "a run refused before it ran has no folder: `sciops status` shows why")


def ledger_row(af: Airflow, project: str, run_id: str) -> dict[str, Any] | None:
    """The ledger's row of that run (either form of its id), among the project's newest 500."""
    return next((r for r in af.ledger(project, 500) if same_run(run_id, r.get("airflow_run_id"), r.get("run_id"))),
                None)


def run_seconds(dag_run: dict[str, Any] | None, row: dict[str, Any] | None = None) -> float | None:
    """The DAG run's true duration (its start to its end, or to now while it goes); the ledger's when Airflow
    no longer has the run."""
    import time

    if dag_run:
        start = timestamp(dag_run.get("start_date"))
        if start is not None:
            return (timestamp(dag_run.get("end_date")) or time.time()) - start
    return (row or {}).get("duration_s")


def status_rows(af: Airflow, project: str | None, run_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The runs ``sciops status`` shows: those still going (from Airflow), then the ledger's newest."""
    from sciops.cli.api import DAG_ID

    going = af.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                    params={"state": ["queued", "running"], "limit": 100})["dag_runs"]
    out = []
    for r in going:
        if project and (r.get("conf") or {}).get("project") != project:
            continue
        if run_id and not same_run(run_id, r["dag_run_id"]):
            continue
        out.append({"run": r["dag_run_id"], "project": (r.get("conf") or {}).get("project", ""), "state": r["state"],
                    "images": "", "seconds": run_seconds(r), "cost": ""})
    shown_ids = {o["run"] for o in out}
    for r in af.ledger(project, 500 if run_id else limit):
        rid = r.get("airflow_run_id") or r["run_id"]
        if rid in shown_ids or (run_id and not same_run(run_id, r.get("airflow_run_id"), r.get("run_id"))):
            continue
        out.append({"run": rid, "project": r["project"], "state": r["status"],
                    "images": f"{r.get('images_ok') or 0}/{r.get('images_failed') or 0}/{r.get('images_total') or 0}",
                    "seconds": run_seconds(af.find_run(rid) if r.get("airflow_run_id") else None, r),
                    "cost": f"{r.get('cost_usd') or 0:.2f}", "reason": r.get("reason")})
    return out[:limit]
