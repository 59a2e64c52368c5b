"""Find ParallelClusters that SciOps made for DAG runs that are over, and delete them.

A cluster is SciOps' when it carries the tag ``sciops:run-id`` (the Airflow run id) and
``sciops:dag-id``; any other cluster is never touched. It is an orphan when its DAG run
is neither running nor queued (finished, failed, or deleted from Airflow's database).
"""
from __future__ import annotations

import logging
from typing import Any, Callable
from sciops.clusters import parallelcluster as pc

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
