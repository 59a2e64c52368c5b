"""Submit a run's chunks as one array job, watch it, resubmit only the failed chunks.

The logic lives here, free of Airflow, so the operator stays a screen long and the
Grid Engine issue's trigger can drive the same steps asynchronously.

State that a retried Airflow task needs to re-attach (job id, attempt, task ids) is
a small JSON dict, :class:`ArrayState`, persisted by the caller before it waits.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sciops.errors import ArrayTimeout, BudgetExceeded, JobFailedError, SchedulerQueryError
from sciops.run.project import write_json
from sciops.arrays.commands import CommandRunner
from sciops.arrays.schedulers.base import ArraySpec, JobState, Scheduler, TaskAccounting
from sciops.arrays.watch import Watch, acct_dict, drive
from sciops_node import contract
from sciops_node.contract import Manifest
from sciops.arrays.workdir import (runner_summary, exit_file_accounting, exited, images_done, latest_accounting,
                                   node_losses, progress_line)

log = logging.getLogger(__name__)

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


def job_prefix(run_id: str) -> str:
    """What every job name of the run ``run_id`` starts with: the scheduler lists a run's jobs by it."""
    return f"sciops-{run_id[:48]}-"


def job_name(manifest: Manifest | dict[str, Any], attempt: int) -> str:
    """The scheduler job name of one attempt: unique per run, plan and attempt, so a job can be found by it.

    ``plan_id`` is new each time ``plan`` runs: a DAG run cleared and run again (same run id)
    never finds the jobs of its earlier life, while a retried ``run_array`` (same plan) does; the
    new plan cancels them (:mod:`sciops.arrays.orphans`).
    """
    manifest = Manifest.of(manifest)
    token = manifest.plan_id or hashlib.sha1(manifest.work_dir.encode()).hexdigest()[:8]
    return f"{job_prefix(manifest.run_id)}{token}-a{attempt}"


#: A chunk whose node is lost this many times is not resubmitted again (a node that keeps dying under
#: the same chunk is more likely the chunk's doing than bad luck).
MAX_NODE_LOSSES = 5


def array_spec(manifest: Manifest | dict[str, Any], task_ids: list[int], attempt: int, python: str | None = None,
               lost: list[str] | None = None) -> ArraySpec:
    """The array job for some chunks of a run (``attempt`` > 1 is a resubmission).

    ``lost``: ``task.attempt`` pairs whose node was lost; the runner does not hold a death in
    them against the image that was running (``SCIOPS_LOST``).
    """
    manifest = Manifest.of(manifest)
    work = manifest.work_dir
    runner = os.path.join(work, "job", "sciops_task.py")
    return ArraySpec(
        name=job_name(manifest, attempt),
        command=[python or sys.executable, runner, "--manifest", contract.manifest_path(work),
                 "--attempt", str(attempt)],
        task_ids=task_ids,
        log_dir=contract.logs_dir(manifest.run_dir),
        workdir=work,
        memory_mb=manifest.memory_mb,
        env={"SCIOPS_ATTEMPT": str(attempt), **({"SCIOPS_LOST": ":".join(lost)} if lost else {})},
    )



class ArrayRun:
    """Drive one run's array: submit, poll, resubmit failed chunks up to ``max_attempts``.

    :param scheduler: builds/parses the scheduler commands.
    :param runner: runs them (locally or on a head node).
    :param manifest: the run manifest.
    :param save_state: called with the state dict after every submit, before waiting, so a
        retried task re-attaches instead of submitting again.
    :param python: the Python that runs the task runner where the tasks run.
    :param local_work_dir: the run's work dir as seen from here (it may be mounted under
        another path on the cluster than ``manifest.work_dir``).
    :param retry: this is a retried task (it may have submitted before it died without saving
        the job id): every submit first looks for its job by name, in accounting too.
    :param budget: the run's budget cap (``sciops.arrays.watch.Watch``), its ``spent_usd`` carried
        across attempts and deferrals; None = no cap.
    :param deadline: ``time.time()`` past which the job is cancelled and the run fails (the
        one timeout of the whole array phase, deferrals included); None = no limit.
    """

    def __init__(self, scheduler: Scheduler, runner: CommandRunner, manifest: Manifest | dict[str, Any],
                 save_state: Callable[[dict[str, Any]], None], poll_seconds: float = 5.0,
                 python: str | None = None, local_work_dir: str | None = None, retry: bool = False,
                 budget: dict[str, float] | None = None, deadline: float | None = None):
        manifest = Manifest.of(manifest)
        self.scheduler, self.runner, self.manifest = scheduler, runner, manifest
        self.retry = retry
        self.budget = dict(budget) if budget and budget.get("budget_usd") else None
        self.deadline = deadline
        self.current: ArrayState | None = None   # the attempt being watched from here (what on_kill cancels)
        self.save_state = save_state
        self.poll_seconds = poll_seconds
        self.python = python
        self.local_work_dir = Path(local_work_dir or manifest.work_dir)
        self.n_tasks = len(manifest.chunks)
        self.n_images = sum(len(c) for c in manifest.chunks)

    def submit(self, task_ids: list[int], attempt: int, history: list | None = None) -> ArrayState:
        lost = [f"{x['task']}.{x['attempt']}" for x in node_losses(history or []) if x["task"] in task_ids]
        spec = array_spec(self.manifest, task_ids, attempt, self.python, lost=lost)
        job_id = self.scheduler.submit(self.runner, spec, look_first=self.retry)
        state = ArrayState(job_id, attempt, task_ids, time.time(), list(history or []))
        self.save_state(state.as_dict())
        self.current = state
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
            event = self.wait(state, started, deadline)
            if event is None:
                return state, None
            nxt = self.settle(state, event)
            if nxt is None:
                return None, self.result(state)
            state = nxt

    def settle(self, state: ArrayState, event: dict[str, Any]) -> ArrayState | None:
        """An attempt's watch ended (in the worker or the triggerer): resubmit (→ new state), end (None) or raise.

        ``budget_exceeded`` writes ``work/budget.json`` and raises :class:`BudgetExceeded`;
        ``timeout`` raises :class:`ArrayTimeout`; both after the job was cancelled.
        """
        if self.budget is not None and event.get("spent_usd") is not None:
            self.budget["spent_usd"] = event["spent_usd"]
        if event.get("status") == "budget_exceeded":
            write_json(self.local_work_dir / "budget.json", event)
            why = (f"cancelled by SciOps: the run's budget ({event['budget_usd']:.2f} USD) would be passed before "
                   f"the next check ({event['spent_usd']:.2f} USD spent)")
            self.record_cancelled(state, event["cancelled_at"], why)
            raise BudgetExceeded(
                f"budget exceeded: {event['spent_usd']:.4f} USD spent of the {event['budget_usd']:.4f} USD budget, "
                f"and {event.get('projected_usd', event['spent_usd']):.4f} USD by the time the job could be stopped at "
                f"this rate; "
                f"{self.scheduler.name} job {event['job_id']} cancelled; finished images are kept")
        if event.get("status") == "timeout":
            self.record_cancelled(state, time.time(), "cancelled by SciOps: the run's array timeout passed")
            raise ArrayTimeout(f"{self.scheduler.name} job {event['job_id']} still ran at the array's timeout "
                               f"({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(event['deadline']))}): "
                               f"cancelled; finished images are kept in {self.manifest.run_dir}")
        if event.get("status") != "ended":
            raise SchedulerQueryError(f"lost track of {self.scheduler.name} job {state.job_id}: "
                                      f"{event.get('message')}")
        acct = {int(t): accounting_from_dict(int(t), a) for t, a in event["accounting"].items()}
        return self.conclude(state, acct)

    def conclude(self, state: ArrayState, acct: dict[int, TaskAccounting]) -> ArrayState | None:
        """Record an ended attempt; resubmit the failed tasks (returns the new state) or end (None).

        A task resubmits while it has attempts left (``max_attempts`` counts the attempts it
        failed in); a task whose node was lost resubmits without spending one, up to
        :data:`MAX_NODE_LOSSES` times.
        """
        failed = sorted(t for t in state.task_ids if acct[t].state != JobState.DONE)
        state.history.append({"attempt": state.attempt, "job_id": state.job_id, "tasks": state.task_ids,
                              "submitted_at": state.submitted_at, "ended_at": time.time(),
                              "accounting": {str(t): acct_dict(acct[t]) for t in state.task_ids}})
        self.write_attempts(state.history)
        if not failed:
            return None
        if self.cancelled_outside(acct, failed):
            # Nobody in SciOps cancelled it: someone deleted the job (qdel/scancel). Do not fight them.
            raise JobFailedError(
                f"{self.scheduler.name} job {state.job_id} was cancelled outside SciOps: task(s) {_ranges(failed)} "
                f"({acct[failed[0]].reason}); not resubmitting. Finished images are kept in {self.manifest.run_dir}")
        spent: dict[int, int] = {}
        lost: dict[int, int] = {}
        for entry in state.history:
            for t, a in entry["accounting"].items():
                if a["state"] == JobState.LOST.value:
                    lost[int(t)] = lost.get(int(t), 0) + 1
                elif a["state"] != JobState.DONE.value:
                    spent[int(t)] = spent.get(int(t), 0) + 1
        again, spent_out = [], []
        for t in failed:
            if acct[t].state == JobState.LOST:
                (again if lost[t] <= MAX_NODE_LOSSES else spent_out).append(t)
            else:
                (again if spent[t] < self.manifest.max_attempts else spent_out).append(t)
        if spent_out:
            log.warning("tasks %s still failed after their attempts (max_attempts %d, or %d node losses); their "
                        "images go to failures.csv", _ranges(spent_out), self.manifest.max_attempts, MAX_NODE_LOSSES)
        if not again:
            return None
        n_lost = sum(1 for t in again if acct[t].state == JobState.LOST)
        log.info("resubmitting %d task(s) %s%s: %s", len(again), _ranges(again),
                 f" ({n_lost} lost with their node: no attempt spent)" if n_lost else "",
                 "; ".join(f"{t}: {acct[t].reason or acct[t].state.value}" for t in again[:5]))
        return self.submit(again, state.attempt + 1, state.history)

    def cancelled_outside(self, acct: dict[int, TaskAccounting], failed: list[int]) -> bool:
        """Was the job deleted from outside (``qdel``/``scancel``), rather than tasks killed or lost?

        The schedulers say CANCELLED only for a deletion: Slurm's ``CANCELLED by <uid>``, a Grid
        Engine task that stopped on ``-notify``'s SIGUSR2 (exit 140) or was deleted before it
        started (no record). A kill (``failed 100``, signal 9) is a failure and is resubmitted,
        so a deletion is believed even for one task of one.
        """
        return bool(failed) and all(acct[t].state == JobState.CANCELLED for t in failed)

    def record_cancelled(self, state: ArrayState, at: float, why: str) -> None:
        """SciOps cancelled the attempt (budget, timeout): put it in ``attempts.json`` as it ended.

        A task whose runner wrote exit 0 had finished; every other one is ``cancelled`` with
        ``why``, which failures.csv repeats for the images it never reached.
        """
        acct = {}
        for t in state.task_ids:
            summary = runner_summary(self.local_work_dir, t, state.attempt) or {}
            if summary.get("exit") == 0:
                acct[str(t)] = acct_dict(TaskAccounting(t, JobState.DONE, 0, summary["end"] - summary["start"]))
            else:
                seconds = (summary.get("end") or at) - summary["start"] if summary.get("start") else None
                acct[str(t)] = acct_dict(TaskAccounting(t, JobState.CANCELLED, summary.get("exit"), seconds,
                                                        reason=why))
        state.history.append({"attempt": state.attempt, "job_id": state.job_id, "tasks": state.task_ids,
                              "submitted_at": state.submitted_at, "ended_at": at, "cancelled": why,
                              "accounting": acct})
        self.write_attempts(state.history)

    def result(self, state: ArrayState) -> dict[str, Any]:
        last = latest_accounting(state.history)
        final_failed = sorted(t for t, a in last.items() if a["state"] != "done")
        lost = node_losses(state.history)
        result = {"attempts": len(state.history), "failed_tasks": final_failed, "tasks": self.n_tasks,
                  "job_ids": [h["job_id"] for h in state.history], "node_losses": len(lost)}
        if len(final_failed) == self.n_tasks:
            raise JobFailedError(
                f"every one of {self.n_tasks} task(s) failed after {state.attempt} attempt(s) "
                f"(jobs {', '.join(result['job_ids'])}); last: "
                + "; ".join(f"task {t}: {last[t]['reason']}" for t in final_failed[:3])
                + f". See {self.manifest.run_dir}/logs/")
        return result

    def watch(self, state: ArrayState) -> Watch:
        """The pure watch of ``state``'s attempt, with the run's budget and deadline."""
        return Watch(state.job_id, state.task_ids, self.scheduler.missing_record, poll_seconds=self.poll_seconds,
                     budget=self.budget, deadline=self.deadline)

    def wait(self, state: ArrayState, started: float, deadline: float | None = None) -> dict[str, Any] | None:
        """Watch ``state``'s attempt from here (:func:`sciops.arrays.watch.drive`): its end event.

        None when ``deadline`` (a ``time.time()``) passes first: the attempt is still running
        (the spend so far is kept in ``self.budget`` for whoever watches next).
        """
        watch = self.watch(state)
        self.current = state
        last_line = ""

        def status():
            try:
                return self.scheduler.status(self.runner, state.job_id, state.task_ids)
            except SchedulerQueryError as exc:
                log.warning("%s", exc)   # unknown is not done (STYLE 4): ask again next poll
                return None

        def progress(states):
            nonlocal last_line
            line = progress_line(states, self.images_done(), self.n_images, started)
            if line != last_line:
                log.info("%s", line)
                last_line = line

        def cancel(reason: str) -> None:
            log.warning("cancelling %s job %s: %s", self.scheduler.name, state.job_id, reason)
            self.scheduler.cancel(self.runner, state.job_id)

        readable = self.local_work_dir.is_dir()   # not on a cluster whose work dir is only on its nodes
        event = drive(watch, status=status, progress=progress, cancel=cancel, stop_at=deadline,
                      exit_files=lambda: exit_file_accounting(self.local_work_dir, state.task_ids, state.attempt),
                      accounting=lambda: self.accounting(state),
                      exited=(lambda tasks: exited(self.local_work_dir, tasks, state.attempt)) if readable else None)
        if self.budget is not None:
            self.budget["spent_usd"] = watch.spent_usd
        return event

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
