"""What finished runs left behind, found and ended: ParallelClusters (:func:`sweep`) and arrays (:func:`sweep_runs`).

A cluster is SciOps' when it carries the tag ``sciops:run-id`` (the Airflow run id) and
``sciops:dag-id``; any other cluster is never touched. It is an orphan when its DAG run
is neither running nor queued (finished, failed, or deleted from Airflow's database).

An array is an orphan when its run folder's ``run_array`` phase still says running and the
DAG run the manifest names (``airflow_run_id``, ``dag_id``) is neither running nor queued: a
DAG run marked failed while its trigger waited, a worker that died, a run deleted from Airflow.
Its jobs are found by name on the run's scheduler and cancelled (:mod:`sciops.arrays.orphans`),
and the phase is ended, failed, saying why. (An array superseded by a new plan of a run that
goes on is cancelled by that plan.)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from sciops.arrays.orphans import cancel_orphans, run_jobs
from sciops.clusters import backend_class, get_backend
from sciops.clusters import parallelcluster as pc
from sciops.errors import SciOpsError
from sciops.phases import phase_end, phase_note
from sciops.run.project import read_manifest
from sciops.settings import setting
from sciops.storage.root import default_root, work_root

log = logging.getLogger(__name__)

RUN_TAG, DAG_TAG = "sciops:run-id", "sciops:dag-id"


def sweep(cli, is_active: Callable[[str, str], bool], dry_run: bool = False) -> dict[str, list[dict[str, Any]]]:
    """One pass over one region's clusters. ``is_active(dag_id, run_id)``: is that DAG run still going?"""
    out: dict[str, list[dict[str, Any]]] = {"deleted": [], "would_delete": [], "kept": [], "not_ours": [],
                                            "deleting": []}
    for entry in cli.list():
        name = entry["name"]
        if entry.get("status") == "DELETE_IN_PROGRESS":
            out["deleting"].append({"name": name})
            continue
        state = cli.describe(name)
        if state["state"] in (pc.GONE, pc.DELETING):
            out["deleting"].append({"name": name})
            continue
        run_id, dag_id = state["tags"].get(RUN_TAG), state["tags"].get(DAG_TAG, "fiji_project")
        if not run_id:
            out["not_ours"].append({"name": name})
            continue
        rec = {"name": name, "dag_id": dag_id, "run_id": run_id, "status": state["status"]}
        if is_active(dag_id, run_id):
            out["kept"].append(rec)
        elif dry_run:
            log.warning("dry run: would delete orphan cluster %s (DAG run %s/%s is over)", name, dag_id, run_id)
            out["would_delete"].append(rec)
        else:
            log.warning("deleting orphan cluster %s (DAG run %s/%s is over)", name, dag_id, run_id)
            cli.delete(name)
            out["deleted"].append(rec)
    log.info("sweep of %s: %s", cli.region, {k: len(v) for k, v in out.items()})
    return out


# -- arrays ---------------------------------------------------------------------------------------------
def run_roots() -> list[Path]:
    """The folders on this machine that hold projects' run folders: the local storage roots and the work root."""
    roots = [default_root(), *setting("SCIOPS_ALLOWED_STORAGE_ROOTS")]
    paths = [Path(r.removeprefix("file://")).expanduser() for r in roots if r and ("://" not in r or
                                                                                 r.startswith("file://"))]
    out: list[Path] = []
    for path in [*paths, work_root()]:
        if path.is_dir() and path.resolve() not in out:
            out.append(path.resolve())
    return out


def running_arrays(roots: Iterable[Path]) -> list[Path]:
    """Run folders under ``roots`` (``<project>/output/<run>/``) whose ``run_array`` phase says running."""
    out = []
    for root in roots:
        for path in sorted(Path(root).glob("*/output/*/work/phases/run_array.json")):
            try:
                status = json.loads(path.read_text(encoding="utf-8")).get("status")
            except (OSError, ValueError):
                continue   # being rewritten: the next sweep sees it
            if status == "running":
                out.append(path.parents[2])
    return out


def sweep_runs(roots: Iterable[Path], is_active: Callable[[str, str], bool],
               dry_run: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Cancel the arrays of runs whose DAG run is over; end their ``run_array`` phase, failed, saying why.

    ``cancelled``: runs whose jobs were cancelled; ``ended``: runs with no job left in the queue (the phase is
    ended all the same: nothing watches it any more); ``kept``: runs that go on (or whose manifest names no DAG
    run: planned before manifests did); ``would_cancel`` with ``dry_run``; ``errors``: runs whose scheduler could
    not be asked (the others are swept all the same).
    """
    from sciops_node import contract

    roots = list(roots)
    out: dict[str, list[dict[str, Any]]] = {"cancelled": [], "ended": [], "kept": [], "would_cancel": [],
                                            "errors": []}
    for run_dir in running_arrays(roots):
        work = run_dir / "work"
        rec: dict[str, Any] = {"run_dir": str(run_dir)}
        try:
            manifest = read_manifest(contract.manifest_path(str(work)))
        except (OSError, ValueError) as exc:
            out["errors"].append({**rec, "error": f"unreadable manifest: {exc}"})
            continue
        dag_id = manifest.dag_id or "fiji_project"
        rec.update(run_id=manifest.run_id, dag_id=dag_id, airflow_run_id=manifest.airflow_run_id)
        if not manifest.airflow_run_id or is_active(dag_id, manifest.airflow_run_id):
            out["kept"].append(rec)
            continue
        why = f"its DAG run {dag_id}/{manifest.airflow_run_id} is over"
        jobs: list[dict[str, Any]] = []
        try:
            if backend_class(manifest.backend).cluster_made_for_run:
                left = "its cluster, and the array with it, is deleted by the cluster sweep"
            else:
                with get_backend(manifest.backend, **manifest.backend_options) as backend:
                    scheduler, runner = backend.scheduler(str(work)), backend.runner()
                    if dry_run:
                        jobs = run_jobs(scheduler, runner, manifest.run_id, manifest.work_dir)
                    else:
                        jobs = cancel_orphans(scheduler, runner, manifest.run_id, manifest.work_dir, work,
                                              why=f"orphaned: {why} (cancelled by the cluster_sweeper)")
                left = (f"cancelled {len(jobs)} job(s) ({', '.join(j['job_id'] for j in jobs)}) still running "
                        "unattended" if jobs else "no job of it left in the queue")
        except Exception as exc:  # noqa: BLE001 - one head node out of reach does not stop the other runs' sweep
            log.warning("cannot sweep the array of %s: %s: %s", run_dir, type(exc).__name__, exc)
            out["errors"].append({**rec, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            continue
        rec["jobs"] = jobs
        if dry_run:
            if jobs:
                log.warning("dry run: would cancel %d orphan job(s) of %s (%s)", len(jobs), run_dir, why)
                out["would_cancel"].append(rec)
            continue
        phase_note(run_dir, "run_array", "orphans_cancelled", jobs)
        phase_end(run_dir, "run_array", SciOpsError(f"orphaned array: {why}; {left}"))
        log.warning("orphaned array of %s: %s; %s", run_dir, why, left)
        out["cancelled" if jobs else "ended"].append(rec)
    log.info("array sweep of %s: %s", ", ".join(map(str, roots)), {k: len(v) for k, v in out.items()})
    return out
