"""Arrays a run's earlier life left running: found by their job names, cancelled, recorded.

Every array job of a run is named ``sciops-<run id>-<plan id>-a<attempt>``
(:func:`sciops.arrays.run.job_name`), so the scheduler lists a run's jobs by the prefix
``sciops-<run id>-`` (:meth:`~sciops.arrays.schedulers.base.Scheduler.queued`: Grid Engine's
``qstat -xml -j 'prefix*'``, Slurm's ``squeue --me``, localq's ``list``). Two moments look for them:

* ``plan`` (:func:`cancel_orphans` with no plan to keep), before it writes its manifest: an array of the
  run still in the queue then belongs to an earlier plan of it (a DAG run cleared or replaced and run
  again, e.g. ``airflow dags test`` of the same logical date), and would go on unattended, writing
  into the same run folder as the new array and reading its new manifest;
* the ``cluster_sweeper`` DAG (:func:`sciops.clusters.sweeper.sweep_runs`), hourly: a run folder whose
  ``run_array`` phase still says running although its DAG run is over.

A queued job is the run's only when its name is the run's prefix, a plan id (letters and digits),
``-a`` and a number, and it works in the run's ``work/`` folder (each scheduler here says which folder):
another run whose id begins alike, or another deployment's run of the same id, is left alone. Each
cancelled job is logged (a warning) and appended to ``work/orphans.json``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from sciops.arrays.commands import CommandRunner
from sciops.arrays.run import job_prefix
from sciops.arrays.schedulers.base import Scheduler
from sciops.errors import OutcomeUnknown, SchedulerQueryError
from sciops.run.project import write_json

log = logging.getLogger(__name__)

#: Where the cancelled jobs are recorded, in the run's ``work/``: a list, appended to.
ORPHANS = "orphans.json"
#: What follows the run's prefix in one of its job names: ``<plan id>-a<attempt>``.
TAIL = re.compile(r"^(?P<plan>[0-9A-Za-z]+)-a(?P<attempt>\d+)$")
#: After the cancel, how long to wait for the jobs to leave the queue (a running Grid Engine task gets
#: ``-notify``'s SIGUSR2 first), and how often to look.
LEAVE_SECONDS = 120.0
LEAVE_POLL_SECONDS = 2.0


def _same_dir(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def run_jobs(scheduler: Scheduler, runner: CommandRunner, run_id: str, work_dir: str) -> list[dict[str, Any]]:
    """The run's jobs in the queue: ``{job_id, name, plan_id, attempt}`` each.

    ``work_dir``: the run's ``work/`` as the cluster sees it (the manifest's ``work_dir``). Raises
    :class:`SchedulerQueryError` when the scheduler cannot be asked: cannot tell is never "none".
    """
    prefix = job_prefix(run_id)
    out = []
    for job in scheduler.queued(runner, prefix):
        tail = TAIL.match(job.name[len(prefix):])
        if not tail:
            continue   # another run, whose id begins as this one's
        if job.workdir and not _same_dir(job.workdir, work_dir):
            log.info("%s job %s (%s) works in %s, not in this run's %s: another run's, left alone", scheduler.name,
                     job.job_id, job.name, job.workdir, work_dir)
            continue
        out.append({"job_id": job.job_id, "name": job.name, "plan_id": tail["plan"],
                    "attempt": int(tail["attempt"])})
    return out


def cancel_orphans(scheduler: Scheduler, runner: CommandRunner, run_id: str, work_dir: str,
                   local_work_dir: Path | str, why: str, keep_plan: str | None = None,
                   leave_seconds: float = LEAVE_SECONDS) -> list[dict[str, Any]]:
    """Cancel the run's queued jobs of any plan but ``keep_plan``; record and return them.

    Waits (up to ``leave_seconds``) for them to leave the queue, so that none still writes into the run
    folder when this returns; each record says whether it did (``left_queue``). ``local_work_dir``: the
    run's ``work/`` on this machine, where ``orphans.json`` is written.
    """
    jobs = [j for j in run_jobs(scheduler, runner, run_id, work_dir) if j["plan_id"] != keep_plan]
    if not jobs:
        return []
    at = time.time()
    for job in jobs:
        log.warning("orphan array: cancelling %s job %s (%s, plan %s, attempt %d) of run %s: %s", scheduler.name,
                    job["job_id"], job["name"], job["plan_id"], job["attempt"], run_id, why)
        # cancel() does not check the exit status: a job that ended meanwhile ("does not exist") is harmless.
        # An answer lost on the way (SSH cut) may hide a cancel that took: the wait below tells.
        with suppress(OutcomeUnknown):
            scheduler.cancel(runner, job["job_id"])
        job.update(scheduler=scheduler.name, cancelled_at=at, why=why)
    gone = wait_gone(scheduler, runner, run_id, {j["job_id"] for j in jobs}, leave_seconds)
    for job in jobs:
        job["left_queue"] = job["job_id"] in gone
        if not job["left_queue"]:
            log.warning("%s job %s was cancelled but is still in the queue after %.0f s", scheduler.name,
                        job["job_id"], leave_seconds)
    record(local_work_dir, jobs)
    return jobs


def wait_gone(scheduler: Scheduler, runner: CommandRunner, run_id: str, ids: set[str], seconds: float) -> set[str]:
    """The jobs of ``ids`` that left the queue within ``seconds`` (a failed look is looked again)."""
    deadline = time.time() + seconds
    prefix = job_prefix(run_id)
    while True:
        try:
            left = ids - {j.job_id for j in scheduler.queued(runner, prefix)}
        except SchedulerQueryError as exc:
            log.warning("%s", exc)
            left = set()
        if left == ids or time.time() >= deadline:
            return left
        time.sleep(LEAVE_POLL_SECONDS)


def record(local_work_dir: Path | str, jobs: list[dict[str, Any]]) -> Path:
    """Append ``jobs`` to the run's ``work/orphans.json``."""
    path = Path(local_work_dir, ORPHANS)
    done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    return write_json(path, done + jobs)


def recorded(local_work_dir: Path | str) -> list[dict[str, Any]]:
    """What ``work/orphans.json`` holds (empty when no array was ever cancelled as an orphan)."""
    path = Path(local_work_dir, ORPHANS)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
