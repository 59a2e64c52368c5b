"""Submit a run's chunks as one array job, watch it, resubmit only the failed chunks.

The logic lives here, free of Airflow, so the operator stays a screen long and the
Grid Engine issue's trigger can drive the same steps asynchronously.

State that a retried Airflow task needs to re-attach (job id, attempt, task ids) is
a small JSON dict, :class:`ArrayState`, persisted by the caller before it waits.
"""
from __future__ import annotations

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
from sciops.runners import CommandRunner
from sciops.schedulers.base import ArraySpec, JobState, Scheduler, TaskAccounting

log = logging.getLogger(__name__)

#: Polls that may find a finished task missing from accounting before we give up on it
#: (accounting lags the queue on real schedulers).
ACCOUNTING_GRACE_POLLS = 10


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


def array_spec(manifest: dict[str, Any], task_ids: list[int], attempt: int, python: str | None = None) -> ArraySpec:
    """The array job for some chunks of a run (``attempt`` > 1 is a resubmission)."""
    work = manifest["work_dir"]
    runner = os.path.join(work, "job", "sciops_task.py")
    return ArraySpec(
        name="sciops-" + manifest["run_id"][:60],
        command=[python or sys.executable, runner, "--manifest", os.path.join(work, "manifest.json"),
                 "--attempt", str(attempt)],
        task_ids=task_ids,
        log_dir=os.path.join(manifest["run_dir"], "logs"),
        workdir=work,
        memory_mb=manifest["memory_mb"],
        env={"SCIOPS_ATTEMPT": str(attempt)},
    )


def images_done(manifest: dict[str, Any]) -> int:
    """Images with a final status so far, when the work dir is readable from here (shared FS)."""
    st = runner_module()
    return sum(len(st.read_statuses(str(p))) for p in Path(manifest["work_dir"], "status").glob("task-*.jsonl"))


class ArrayRun:
    """Drive one run's array: submit, poll, resubmit failed chunks up to ``max_attempts``.

    :param scheduler: builds/parses the scheduler commands.
    :param runner: runs them (locally or on a head node).
    :param manifest: the run manifest.
    :param save_state: called with the state dict after every submit, before waiting, so a
        retried task re-attaches instead of submitting again.
    """

    def __init__(self, scheduler: Scheduler, runner: CommandRunner, manifest: dict[str, Any],
                 save_state: Callable[[dict[str, Any]], None], poll_seconds: float = 5.0):
        self.scheduler, self.runner, self.m = scheduler, runner, manifest
        self.save_state = save_state
        self.poll_seconds = poll_seconds
        self.n_tasks = len(manifest["chunks"])
        self.n_images = sum(len(c) for c in manifest["chunks"])

    def submit(self, task_ids: list[int], attempt: int, history: list | None = None) -> ArrayState:
        spec = array_spec(self.m, task_ids, attempt)
        job_id = self.scheduler.submit(self.runner, spec)
        state = ArrayState(job_id, attempt, task_ids, time.time(), list(history or []))
        self.save_state(state.as_dict())
        log.info("submitted %s job %s: attempt %d, %d task(s) %s", self.scheduler.name, job_id, attempt,
                 len(task_ids), _ranges(task_ids))
        return state

    def run(self, state: ArrayState | None = None) -> dict[str, Any]:
        """Run to the end; returns the attempts record. ``state`` re-attaches to a submitted job."""
        if state is None:
            state = self.submit(list(range(1, self.n_tasks + 1)), 1)
        else:
            log.info("re-attaching to %s job %s (attempt %d)", self.scheduler.name, state.job_id, state.attempt)
        started = time.time()
        while True:
            acct = self.wait(state, started)
            failed = sorted(t for t in state.task_ids if acct[t].state != JobState.DONE)
            state.history.append({"attempt": state.attempt, "job_id": state.job_id, "tasks": state.task_ids,
                                  "submitted_at": state.submitted_at, "ended_at": time.time(),
                                  "accounting": {str(t): _acct_dict(a) for t, a in acct.items()}})
            self.write_attempts(state.history)
            if not failed:
                break
            if state.attempt >= self.m["max_attempts"]:
                log.warning("tasks %s still failed after %d attempt(s); their images go to failures.csv",
                            _ranges(failed), state.attempt)
                break
            log.info("resubmitting %d failed task(s) %s: %s", len(failed), _ranges(failed),
                     "; ".join(f"{t}: {acct[t].reason or acct[t].state.value}" for t in failed[:5]))
            state = self.submit(failed, state.attempt + 1, state.history)
        final_failed = sorted(int(t) for t, a in state.history[-1]["accounting"].items() if a["state"] != "done")
        result = {"attempts": len(state.history), "failed_tasks": final_failed, "tasks": self.n_tasks,
                  "job_ids": [h["job_id"] for h in state.history]}
        if len(final_failed) == self.n_tasks:
            raise JobFailedError(
                f"every one of {self.n_tasks} task(s) failed after {state.attempt} attempt(s) "
                f"(jobs {', '.join(result['job_ids'])}); last: "
                + "; ".join(f"task {t}: {state.history[-1]['accounting'][str(t)]['reason']}" for t in final_failed[:3])
                + f". See {self.m['run_dir']}/logs/")
        return result

    def wait(self, state: ArrayState, started: float) -> dict[int, TaskAccounting]:
        """Poll until every task of ``state`` has ended; return accounting for each."""
        grace = 0
        last_line = ""
        while True:
            try:
                states = self.scheduler.status(self.runner, state.job_id, state.task_ids)
            except SchedulerQueryError as exc:
                # Unknown is not done (STYLE 4): log and ask again next poll.
                log.warning("%s", exc)
                states = {t: JobState.UNKNOWN for t in state.task_ids}
            line = self.progress(states, started)
            if line != last_line:
                log.info("%s", line)
                last_line = line
            # Out of the queue (finished or unknown): accounting decides how each task ended.
            if all(s.finished or s == JobState.UNKNOWN for s in states.values()):
                acct = self.accounting(state)
                missing = [t for t in state.task_ids if t not in acct or not acct[t].state.finished]
                if not missing:
                    return acct
                grace += 1
                if grace > ACCOUNTING_GRACE_POLLS:
                    state_, reason = self.scheduler.missing_record
                    for t in missing:
                        acct[t] = TaskAccounting(t, state_, reason=reason)
                    return acct
            time.sleep(self.poll_seconds)

    def accounting(self, state: ArrayState) -> dict[int, TaskAccounting]:
        try:
            return self.scheduler.accounting(self.runner, state.job_id, state.task_ids)
        except SchedulerQueryError as exc:
            log.warning("%s", exc)
            return {}

    def progress(self, states: dict[int, JobState], started: float) -> str:
        counts = {s: 0 for s in JobState}
        for s in states.values():
            counts[s] += 1
        done = images_done(self.m)
        elapsed = time.time() - started
        eta = f"{elapsed / done * (self.n_images - done):.0f}s" if done else "?"
        return (f"tasks: {counts[JobState.DONE]} done, {counts[JobState.RUNNING]} running, "
                f"{counts[JobState.PENDING] + counts[JobState.HELD]} waiting, "
                f"{counts[JobState.FAILED] + counts[JobState.CANCELLED] + counts[JobState.ERROR]} failed "
                f"of {len(states)}; images {done}/{self.n_images}; elapsed {elapsed:.0f}s; ETA {eta}")

    def write_attempts(self, history: list[dict[str, Any]]) -> None:
        path = Path(self.m["work_dir"], "attempts.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(history, indent=1))
        os.replace(tmp, path)


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
