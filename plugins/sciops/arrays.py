"""Submit a run's chunks as one array job, watch it, resubmit only the failed chunks.

The logic lives here, free of Airflow, so the operator stays a screen long and the
Grid Engine issue's trigger can drive the same steps asynchronously.

State that a retried Airflow task needs to re-attach (job id, attempt, task ids) is
a small JSON dict, :class:`ArrayState`, persisted by the caller before it waits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sciops import runner_module
from sciops.errors import JobFailedError, SchedulerQueryError
from sciops.project import write_json
from sciops.runners import CommandRunner
from sciops.schedulers.base import ArraySpec, JobState, Scheduler, TaskAccounting

log = logging.getLogger(__name__)

#: How long a task may be out of the queue but missing from accounting before we give up
#: on it: accounting lags the queue (Grid Engine flushes every 15 s by default, Slurm's
#: sacct lags squeue by seconds), and giving up too early would misreport a finished task.
ACCOUNTING_GRACE_SECONDS = 120.0
#: Once the queue is empty, how soon to ask accounting again.
ACCOUNTING_RETRY_SECONDS = 0.5


@dataclass
class ArrayState:
    """Where an array run stands; JSON round-trips through ``as_dict``/``from_dict``."""

    job_id: str
    attempt: int
    task_ids: list[int]
    submitted_at: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrayState:
        return cls(**data)


def job_name(manifest: dict[str, Any], attempt: int) -> str:
    """The scheduler job name of one attempt: unique per run, plan and attempt, so a job can be found by it.

    ``plan_id`` is new each time ``plan`` runs: a DAG run cleared and run again (same run id)
    never finds the jobs of its earlier life, while a retried ``run_array`` (same plan) does.
    """
    token = manifest.get("plan_id") or hashlib.sha1(manifest["work_dir"].encode()).hexdigest()[:8]
    return f"sciops-{manifest['run_id'][:48]}-{token}-a{attempt}"


def array_spec(manifest: dict[str, Any], task_ids: list[int], attempt: int, python: str | None = None) -> ArraySpec:
    """The array job for some chunks of a run (``attempt`` > 1 is a resubmission)."""
    work = manifest["work_dir"]
    runner = os.path.join(work, "job", "sciops_task.py")
    return ArraySpec(
        name=job_name(manifest, attempt),
        command=[python or sys.executable, runner, "--manifest", os.path.join(work, "manifest.json"),
                 "--attempt", str(attempt)],
        task_ids=task_ids,
        log_dir=os.path.join(manifest["run_dir"], "logs"),
        workdir=work,
        memory_mb=manifest["memory_mb"],
        env={"SCIOPS_ATTEMPT": str(attempt)},
    )


def images_done(work_dir: str | Path) -> int | None:
    """Images with a final status so far, or None when the work dir is not readable from here."""
    status_dir = Path(work_dir, "status")
    if not Path(work_dir).is_dir():
        return None
    st = runner_module()
    return sum(len(st.read_statuses(str(p))) for p in status_dir.glob("task-*.jsonl"))


def exit_file_accounting(work_dir: str | Path | None, task_ids: list[int],
                         attempt: int) -> dict[int, TaskAccounting] | None:
    """Completion from the runners' own exit files, when every task of the attempt wrote exit 0.

    Each task runner writes ``status/task-NNNN.attempt-K.json`` as its very last act. When
    all of them say exit 0 the attempt is done without waiting for the scheduler's
    accounting (which lags: Grid Engine flushes every 15 s by default). Anything else
    (a missing file, a non-zero exit, a work dir not readable from here) returns None:
    accounting then decides, and explains the failure.
    """
    if work_dir is None:
        return None
    out = {}
    for t in task_ids:
        path = Path(work_dir, "status", f"task-{t:04d}.attempt-{attempt}.json")
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if summary.get("exit") != 0:
            return None
        out[t] = TaskAccounting(t, JobState.DONE, 0, round(summary["end"] - summary["start"], 3), None, "")
    return out


def ended(states: dict[int, JobState]) -> bool:
    """Every task is out of the queue (finished or unknown) or stuck in an error state."""
    return all(s.finished or s in (JobState.UNKNOWN, JobState.ERROR) for s in states.values())


def complete_accounting(scheduler: Scheduler, acct: dict[int, TaskAccounting], task_ids: list[int],
                        errored: list[int], give_up: bool) -> dict[int, TaskAccounting] | None:
    """Accounting for every task, or None to ask again (accounting lags the queue).

    ``errored`` tasks sat in an error state (SGE ``Eqw``) and were deleted by us; after
    ``give_up``, tasks still without a record get the scheduler's ``missing_record`` verdict.
    """
    missing = [t for t in task_ids if t not in acct or not acct[t].state.finished]
    if any(t not in errored for t in missing) and not give_up:
        return None   # a deleted Eqw task never gets a record: no need to wait for it
    acct = dict(acct)
    state_, reason = scheduler.missing_record
    for t in missing:
        if t in errored:
            acct[t] = TaskAccounting(t, JobState.FAILED, reason="stuck in an error state (SGE Eqw: is the log "
                                                                "folder writable on the nodes?); deleted")
        else:
            acct[t] = TaskAccounting(t, state_, reason=reason)
    return acct


def progress_line(states: dict[int, JobState], done: int | None, n_images: int, started: float) -> str:
    counts = {s: 0 for s in JobState}
    for s in states.values():
        counts[s] += 1
    elapsed = time.time() - started
    eta = f"{elapsed / done * (n_images - done):.0f}s" if done else "?"
    images = f"images {done}/{n_images}" if done is not None else f"images ?/{n_images}"
    return (f"tasks: {counts[JobState.DONE]} done, {counts[JobState.RUNNING]} running, "
            f"{counts[JobState.UNKNOWN]} ended (awaiting accounting), "
            f"{counts[JobState.PENDING] + counts[JobState.HELD]} waiting, "
            f"{counts[JobState.FAILED] + counts[JobState.CANCELLED] + counts[JobState.ERROR]} failed "
            f"of {len(states)}; {images}; elapsed {elapsed:.0f}s; ETA {eta}")


class ArrayRun:
    """Drive one run's array: submit, poll, resubmit failed chunks up to ``max_attempts``.

    :param scheduler: builds/parses the scheduler commands.
    :param runner: runs them (locally or on a head node).
    :param manifest: the run manifest.
    :param save_state: called with the state dict after every submit, before waiting, so a
        retried task re-attaches instead of submitting again.
    :param python: the Python that runs the task runner where the tasks run.
    :param local_work_dir: the run's work dir as seen from here (it may be mounted under
        another path on the cluster than ``manifest['work_dir']``).
    :param retry: this is a retried task (it may have submitted before it died without saving
        the job id): every submit first looks for its job by name, in accounting too.
    """

    def __init__(self, scheduler: Scheduler, runner: CommandRunner, manifest: dict[str, Any],
                 save_state: Callable[[dict[str, Any]], None], poll_seconds: float = 5.0,
                 python: str | None = None, local_work_dir: str | None = None, retry: bool = False):
        self.scheduler, self.runner, self.m = scheduler, runner, manifest
        self.retry = retry
        self.save_state = save_state
        self.poll_seconds = poll_seconds
        self.python = python
        self.local_work_dir = Path(local_work_dir or manifest["work_dir"])
        self.n_tasks = len(manifest["chunks"])
        self.n_images = sum(len(c) for c in manifest["chunks"])

    def submit(self, task_ids: list[int], attempt: int, history: list | None = None) -> ArrayState:
        spec = array_spec(self.m, task_ids, attempt, self.python)
        job_id = self.scheduler.submit(self.runner, spec, look_first=self.retry)
        state = ArrayState(job_id, attempt, task_ids, time.time(), list(history or []))
        self.save_state(state.as_dict())
        log.info("submitted %s job %s: attempt %d, %d task(s) %s", self.scheduler.name, job_id, attempt,
                 len(task_ids), _ranges(task_ids))
        return state

    def start(self) -> ArrayState:
        return self.submit(list(range(1, self.n_tasks + 1)), 1)

    def run(self, state: ArrayState | None = None) -> dict[str, Any]:
        """Run to the end, polling from here; ``state`` re-attaches to a submitted job."""
        if state is None:
            state = self.start()
        else:
            log.info("re-attaching to %s job %s (attempt %d)", self.scheduler.name, state.job_id, state.attempt)
        return self.advance(state)[1]

    def advance(self, state: ArrayState, deadline: float | None = None) -> tuple[ArrayState | None, dict | None]:
        """Poll from here, resubmitting failed chunks, until the run ends or ``deadline`` passes.

        Returns ``(None, result)`` when the run ended, ``(state, None)`` when the deadline came
        first (``state`` is the attempt still running: wait for it elsewhere).
        """
        started = time.time()
        while True:
            acct = self.wait(state, started, deadline)
            if acct is None:
                return state, None
            nxt = self.conclude(state, acct)
            if nxt is None:
                return None, self.result(state)
            state = nxt

    def conclude(self, state: ArrayState, acct: dict[int, TaskAccounting]) -> ArrayState | None:
        """Record an ended attempt; resubmit the failed tasks (returns the new state) or end (None)."""
        failed = sorted(t for t in state.task_ids if acct[t].state != JobState.DONE)
        state.history.append({"attempt": state.attempt, "job_id": state.job_id, "tasks": state.task_ids,
                              "submitted_at": state.submitted_at, "ended_at": time.time(),
                              "accounting": {str(t): _acct_dict(acct[t]) for t in state.task_ids}})
        self.write_attempts(state.history)
        if not failed:
            return None
        if self.cancelled_outside(state, acct, failed):
            # Nobody in SciOps cancelled it: someone deleted the job (qdel/scancel). Do not fight them.
            raise JobFailedError(
                f"{self.scheduler.name} job {state.job_id} was cancelled outside SciOps: task(s) {_ranges(failed)} "
                f"({acct[failed[0]].reason}); not resubmitting. Finished images are kept in {self.m['run_dir']}")
        if state.attempt >= self.m["max_attempts"]:
            log.warning("tasks %s still failed after %d attempt(s); their images go to failures.csv",
                        _ranges(failed), state.attempt)
            return None
        log.info("resubmitting %d failed task(s) %s: %s", len(failed), _ranges(failed),
                 "; ".join(f"{t}: {acct[t].reason or acct[t].state.value}" for t in failed[:5]))
        return self.submit(failed, state.attempt + 1, state.history)

    def cancelled_outside(self, state: ArrayState, acct: dict[int, TaskAccounting], failed: list[int]) -> bool:
        """Was the whole job deleted from outside, rather than some tasks killed?

        Grid Engine records ``qdel`` of a running task exactly like ``kill -9`` of its shell
        (failed 100, exit 137), and a deleted pending task not at all. So: every failed task
        was cancelled, and either one was deleted before it started (no record) or the
        attempt had several tasks and all of them were cancelled. A single killed task is
        resubmitted like any failure.
        """
        if not failed or any(acct[t].state != JobState.CANCELLED for t in failed):
            return False
        never_ran = any(acct[t].reason == self.scheduler.missing_record[1] for t in failed)
        return never_ran or (len(state.task_ids) > 1 and len(failed) == len(state.task_ids))

    def result(self, state: ArrayState) -> dict[str, Any]:
        last = state.history[-1]["accounting"]
        final_failed = sorted(int(t) for t, a in last.items() if a["state"] != "done")
        result = {"attempts": len(state.history), "failed_tasks": final_failed, "tasks": self.n_tasks,
                  "job_ids": [h["job_id"] for h in state.history]}
        if len(final_failed) == self.n_tasks:
            raise JobFailedError(
                f"every one of {self.n_tasks} task(s) failed after {state.attempt} attempt(s) "
                f"(jobs {', '.join(result['job_ids'])}); last: "
                + "; ".join(f"task {t}: {last[str(t)]['reason']}" for t in final_failed[:3])
                + f". See {self.m['run_dir']}/logs/")
        return result

    def wait(self, state: ArrayState, started: float,
             deadline: float | None = None) -> dict[int, TaskAccounting] | None:
        """Poll until every task of ``state`` has ended; return accounting for each.

        None when ``deadline`` (a ``time.time()``) passes first.
        """
        queue_empty_since: float | None = None
        last_line = ""
        errored: list[int] = []
        while True:
            try:
                states = self.scheduler.status(self.runner, state.job_id, state.task_ids)
            except SchedulerQueryError as exc:
                # Unknown is not done (STYLE 4): log and ask again next poll.
                log.warning("%s", exc)
                states = {t: JobState.UNKNOWN for t in state.task_ids}
            line = progress_line(states, self.images_done(), self.n_images, started)
            if line != last_line:
                log.info("%s", line)
                last_line = line
            if ended(states):
                stuck = [t for t, s in states.items() if s == JobState.ERROR]
                if stuck and not errored:
                    log.warning("tasks %s stuck in an error state; deleting job %s", _ranges(stuck), state.job_id)
                    self.scheduler.cancel(self.runner, state.job_id)
                    errored = stuck
                queue_empty_since = queue_empty_since or time.time()
                done = exit_file_accounting(self.local_work_dir, state.task_ids, state.attempt)
                if done is not None and not errored:
                    return done
                acct = complete_accounting(self.scheduler, self.accounting(state), state.task_ids, errored,
                                           give_up=time.time() - queue_empty_since > ACCOUNTING_GRACE_SECONDS)
                if acct is not None:
                    return acct
                pause = min(self.poll_seconds, ACCOUNTING_RETRY_SECONDS)  # accounting lands within a second
            else:
                queue_empty_since = None
                pause = self.poll_seconds
            if deadline is not None and time.time() + pause > deadline:
                return None
            time.sleep(pause)

    def accounting(self, state: ArrayState) -> dict[int, TaskAccounting]:
        try:
            return self.scheduler.accounting(self.runner, state.job_id, state.task_ids)
        except SchedulerQueryError as exc:
            log.warning("%s", exc)
            return {}

    def images_done(self) -> int | None:
        return images_done(self.local_work_dir)

    def write_attempts(self, history: list[dict[str, Any]]) -> None:
        write_json(self.local_work_dir / "attempts.json", history)


def accounting_from_dict(t: int, a: dict[str, Any]) -> TaskAccounting:
    return TaskAccounting(t, JobState(a["state"]), a.get("exit_code"), a.get("seconds"), a.get("max_rss_mb"),
                          a.get("reason", ""))


def _acct_dict(a: TaskAccounting) -> dict[str, Any]:
    return {"state": a.state.value, "exit_code": a.exit_code, "seconds": a.seconds, "max_rss_mb": a.max_rss_mb,
            "reason": a.reason}


def _ranges(ids: list[int]) -> str:
    """[1,2,3,7] → '1-3,7' for log lines."""
    out, start, prev = [], None, None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out)
