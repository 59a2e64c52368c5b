"""The bodies of the ``fiji_project`` tasks, by concern, free of Airflow so they are plain to test.

One run's path: :mod:`~sciops.phases.transfer` ``sync_up`` → :mod:`~sciops.phases.checks`
``validate`` (makes the :class:`~sciops.run.runinfo.RunInfo` every later task gets) → ``create_cluster``
(``sciops.operators.cluster``) → :mod:`~sciops.phases.transfer` ``stage_in`` →
:mod:`~sciops.phases.plan` ``plan`` → ``run_array`` (``sciops.operators.run_array``) →
:mod:`~sciops.phases.transfer` ``collate``, ``stage_out``, ``sync_down`` →
:mod:`~sciops.phases.record` ``record``, ``outcome``. What differs per backend is asked of the
run's :class:`~sciops.clusters.base.ClusterBackend`; nothing here compares backend names.

Each phase writes its start, end and outcome to ``output/<run_id>/work/phases/<phase>.json``
(this module); ``record`` turns them into ``run.json``. The storage steps return ``None``
when they have nothing to do (a local storage root, no LAN folder); the DAG turns that into a skip.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sciops.run.project import disk_full, write_json

log = logging.getLogger(__name__)

PHASES = "work/phases"
#: A run validate turned down: its status in run.json and the ledger.
REFUSED = "refused"
#: Airflow's run types as a lab says them.
TRIGGERS = {"manual": "UI/API", "scheduled": "nightly", "asset_triggered": "new data", "backfill": "backfill"}
#: Run ids fiji_nightly gives the runs it starts (their run type is "manual", as for any triggered run).
NIGHTLY_PREFIX = "nightly__"


def trigger_label(run_type: str | None, airflow_run_id: str) -> str | None:
    """How the run was started, as a lab says it."""
    if airflow_run_id.startswith(NIGHTLY_PREFIX):
        return "nightly"
    return TRIGGERS.get(run_type, run_type)


def phase_path(run_dir: Path | str, name: str) -> Path:
    return Path(run_dir, PHASES, f"{name}.json")


def phase_start(run_dir: Path | str, name: str, start: float | None = None, keep_start: bool = False) -> None:
    """Mark a phase as running. ``keep_start``: a re-attached task keeps the first start time."""
    path = phase_path(run_dir, name)
    if keep_start and path.exists():
        rec = json.loads(path.read_text())
        if rec.get("status") == "running":
            return
    write_json(path, {"phase": name, "start": start or time.time(), "status": "running"})


def phase_end(run_dir: Path | str, name: str, error: BaseException | None = None) -> None:
    path = phase_path(run_dir, name)
    rec = json.loads(path.read_text()) if path.exists() else {"phase": name, "start": time.time()}
    rec["end"] = time.time()
    rec["status"] = "failed" if error else "success"
    if error:
        rec["error"] = f"{type(error).__name__}: {error}"[:4000]
    else:
        rec.pop("error", None)
    write_json(path, rec)


def phase_note(run_dir: Path | str, name: str, key: str, value) -> None:
    """Add ``key: value`` to a phase's record (kept by its end; ``record`` copies it into run.json)."""
    path = phase_path(run_dir, name)
    rec = json.loads(path.read_text()) if path.exists() else {"phase": name, "start": time.time(), "status": "running"}
    rec[key] = value
    write_json(path, rec)


@contextmanager
def phase(run_dir: Path | str, name: str, start: float | None = None) -> Iterator[None]:
    """Record one phase's start, end and outcome (rewritten on a retry: keyed by phase name).

    A full filesystem under the phase (Python's or pyarrow's "No space left on device") is raised as a
    StorageError naming the path and the bytes free (:func:`sciops.run.project.disk_full`). When the
    phase's own record cannot be written either (the same full disk), the phase's error is raised, not
    that one: ``record`` then learns of the failure from Airflow's task states.
    """
    phase_start(run_dir, name, start)
    try:
        yield
    except BaseException as exc:
        full = disk_full(exc, getattr(exc, "filename", None) or run_dir)
        try:
            phase_end(run_dir, name, full or exc)
        except Exception as end_exc:  # noqa: BLE001 - the phase's own error is what must be seen
            log.error("phase %s: its record could not be written (%s)", name, end_exc)
        if full:
            raise full from exc
        raise
    phase_end(run_dir, name)
