"""The storage steps and collate: ``sync_up``, ``stage_in``, ``collate``, ``stage_out``, ``sync_down``.

On a local storage root runs work in the root itself and the staging steps have nothing to
do (``None``: the DAG skips them). On S3 the run's backend moves the files: this worker for
``local``, the head node's AWS CLI next to the files for ``existing``, the bucket both ways
for ``parallelcluster`` (see each backend's ``stage_in`` / ``stage_out``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sciops.errors import ConfigError, SciOpsError
from sciops.phases import phase, phase_path
from sciops.reporting.collate import collate as collate_results
from sciops.run import config as config_mod
from sciops.run.project import Project, read_manifest
from sciops.run.runinfo import RunInfo, storage_for
from sciops.storage import sync as sync_mod
from sciops.storage.sync import log_stats

#: What a run that collated must have in the LAN folder after sync_down (the tables collate always writes).
COLLATED_TABLES = ("results.csv", "summary.csv", "failures.csv")


def sync_up(conf: dict[str, Any]) -> dict[str, Any] | None:
    """The LAN project folder (``sync_from``) → the storage root. ``None``: nothing to do."""
    if not conf.get("sync_from"):
        return None
    folder = Path(conf["sync_from"])
    lan = Project(str(conf.get("project") or ""), folder)
    config_mod.build(conf, lan.defaults() if folder.is_dir() else {})  # bad input fails before any transfer
    if not (folder / "input").is_dir():
        raise ConfigError([("sync_from", f"{folder} is not a project folder on this worker (no input/ in it); give "
                                         "the LAN folder that holds input/, src/ and project.yaml")])
    storage = storage_for(conf)
    from sciops.phases.checks import check_outside_projects

    check_outside_projects(str(folder), "sync_from", storage)   # never another project's folder, nor this one's
    storage.check()
    start = time.time()
    stats = log_stats(sync_mod.sync_up(storage, folder, conf["project"], verify=True).as_dict())  # checks the bucket
    return dict(stats, phase="sync_up", start=start, end=time.time(), status="success")


def stage_in(info: RunInfo | dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The project (``input/ src/ bin/ project.yaml``) → the run's working copy. ``None`` on a local root."""
    info = RunInfo.of(info)
    storage = info.storage()
    if storage.is_local:
        return None
    with phase(info.run_dir, "stage_in"), info.backend(cluster) as backend:
        return log_stats(backend.stage_in(storage, info))


def collate(info: RunInfo | dict[str, Any], manifest_path: str, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """``results.csv``, ``summary.csv``, ``failures.csv`` from what the tasks wrote (fetched first if elsewhere)."""
    info = RunInfo.of(info)
    with phase(info.run_dir, "collate"), info.backend(cluster) as backend:
        if not backend.shares_files:
            backend.fetch_run(info)
        return collate_results(Path(info.run_dir), read_manifest(manifest_path)).as_dict()


def stage_out(info: RunInfo | dict[str, Any] | None) -> dict[str, Any] | None:
    """The run folder → ``<project>/output/<run_id>/`` in the storage root. ``None`` on a local root."""
    if not info:
        return None
    info = RunInfo.of(info)
    storage = info.storage()
    if storage.is_local or not Path(info.run_dir).is_dir():
        return None
    with phase(info.run_dir, "stage_out"), info.backend() as backend:
        return log_stats(backend.stage_out(storage, info))


def sync_down(info: RunInfo | dict[str, Any] | None) -> dict[str, Any] | None:
    """``output/<run_id>/`` → the LAN folder (``sync_to``, else ``sync_from``). ``None``: not asked for.

    A sync that "succeeds" with the results missing (the bucket lost them: an endpoint restarted
    between stage_out and here, a lifecycle rule) fails, naming what is missing: a run never
    ends ``success`` unless its tables are where the user will look.
    """
    if not info:
        return None
    info = RunInfo.of(info)
    target = info.config.sync_to or info.config.sync_from
    if not target:
        return None
    with phase(info.run_dir, "sync_down"):
        storage = info.storage()
        stats = log_stats(sync_mod.sync_down(storage, info.project, info.run_id, target).as_dict())
        collated = phase_path(info.run_dir, "collate")
        if collated.exists() and json.loads(collated.read_text()).get("status") == "success":
            dest = Path(target, "output", info.run_id)
            missing = [name for name in COLLATED_TABLES if not (dest / name).is_file()]
            if missing:
                raise SciOpsError(
                    f"sync_down ended with {', '.join(missing)} missing from {dest}: the storage root does not hold "
                    f"them ({storage.url}/{info.project}/output/{info.run_id}/, {stats.get('transferred', 0)} "
                    "file(s) copied). Clear stage_out and sync_down in the UI to push and fetch them again.")
        return stats

