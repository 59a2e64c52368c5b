"""``ArrayJobTrigger``: watch an array job from the triggerer, without holding a worker.

Small and serializable (STYLE 3): JSON arguments only, ``serialize()`` in step with
``__init__``. One connection is held for the whole wait (SSH through asyncssh, or local
subprocesses); each poll is ONE status command whatever the array size; connection
errors are retried with backoff and kept apart from job failures; exactly one final
event; nothing raises out of ``run()``.

Events: ``{"status": "ended", "job_id", "reconnects", "accounting": {task: {...}}}`` when every task has
ended and is accounted for, or ``{"status": "error", "job_id", "message"}``.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sciops.arrays import ACCOUNTING_GRACE_SECONDS


class ArrayJobTrigger(BaseTrigger):
    """
    :param job_id: the scheduler's job id.
    :param task_ids: the chunks this job runs (array index i ↔ ``task_ids[i-1]``).
    :param scheduler: scheduler name (``local``, ``sge``).
    :param scheduler_options: its constructor arguments.
    :param ssh_conn_id: head node connection; None runs the commands locally.
    :param poll_seconds: seconds between polls.
    :param n_images: images in the run (for the progress line).
    :param work_dir: the run's work dir if readable from the triggerer (progress in images), else None.
    :param started_at: when the run's array began (for elapsed/ETA).
    :param attempt: the attempt this job is (its runners' exit files are named by it).
    :param ssh_host: the head node's address when it is not the connection's (a new ParallelCluster).
    :param ssh_host_key: that head node's host key, pinned for the run (the only key accepted).
    :param budget: ``{"budget_usd", "spent_usd", "task_rate_usd_per_hour", "fixed_rate_usd_per_hour"}``:
        at every poll the spend grows by running tasks × task rate + the fixed rate over the
        time since the last poll; past ``budget_usd`` the job is cancelled in that same poll
        and the event says ``budget_exceeded``. ``since`` (optional): the time from which the
        spend is not counted yet (the submission, when the worker watched the first seconds).
    :param deferred_at: when the task deferred; no event is sent sooner than
        ``min_defer_seconds`` after it (Airflow's stale-executor-event race: see ``sciops.triggers``).
    """

    def __init__(self, job_id: str, task_ids: list[int], scheduler: str, scheduler_options: dict[str, Any],
                 ssh_conn_id: str | None, poll_seconds: float = 5.0, n_images: int = 0,
                 work_dir: str | None = None, started_at: float | None = None, max_reconnect_attempts: int = 10,
                 accounting_grace_seconds: float = ACCOUNTING_GRACE_SECONDS, attempt: int = 1,
                 ssh_host: str | None = None, budget: dict[str, float] | None = None,
                 deferred_at: float | None = None, min_defer_seconds: float | None = None,
                 ssh_host_key: str | None = None):
        super().__init__()
        from sciops.triggers import min_defer_seconds as default_hold

        self.job_id = job_id
        self.task_ids = list(task_ids)
        self.scheduler = scheduler
        self.scheduler_options = dict(scheduler_options)
        self.ssh_conn_id = ssh_conn_id
        self.poll_seconds = poll_seconds
        self.n_images = n_images
        self.work_dir = work_dir
        self.started_at = started_at or time.time()
        self.max_reconnect_attempts = max_reconnect_attempts
        self.accounting_grace_seconds = accounting_grace_seconds
        self.attempt = attempt
        self.ssh_host = ssh_host
        self.ssh_host_key = ssh_host_key
        self.budget = dict(budget) if budget else None
        self.deferred_at = deferred_at or time.time()
        self.min_defer_seconds = default_hold() if min_defer_seconds is None else min_defer_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("sciops.triggers.array.ArrayJobTrigger", {
            "job_id": self.job_id, "task_ids": self.task_ids, "scheduler": self.scheduler,
            "scheduler_options": self.scheduler_options, "ssh_conn_id": self.ssh_conn_id,
            "poll_seconds": self.poll_seconds, "n_images": self.n_images, "work_dir": self.work_dir,
            "started_at": self.started_at, "max_reconnect_attempts": self.max_reconnect_attempts,
            "accounting_grace_seconds": self.accounting_grace_seconds, "attempt": self.attempt,
            "ssh_host": self.ssh_host, "budget": self.budget, "deferred_at": self.deferred_at,
            "min_defer_seconds": self.min_defer_seconds, "ssh_host_key": self.ssh_host_key,
        })

    def _runner(self):
        from sciops.runners import AsyncCommandRunner

        return AsyncCommandRunner(self.ssh_conn_id, host=self.ssh_host, host_key=self.ssh_host_key)

    def _backoff(self, failures: int) -> float:
        base = min(2 ** (failures - 1), 30)
        return base + random.uniform(0, base)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from sciops.triggers import hold

        watch = self._watch()
        try:
            event = await watch.__anext__()  # _watch yields exactly one event
        finally:
            await watch.aclose()  # closes the SSH connection now, not at garbage collection
        # never before the scheduler has handled the deferral (see sciops.triggers)
        await hold(self.deferred_at, self.min_defer_seconds)
        yield event

    async def _watch(self) -> AsyncIterator[TriggerEvent]:
        from sciops.arrays import (ACCOUNTING_RETRY_SECONDS, _acct_dict, complete_accounting, ended,
                                   exit_file_accounting, images_done, progress_line)
        from sciops.schedulers import get_scheduler
        from sciops.schedulers.base import JobState

        try:
            sched = get_scheduler(self.scheduler, **self.scheduler_options)
            # importing asyncssh takes ~0.35 s: in a thread, not in the triggerer's event loop
            connection_errors = await asyncio.to_thread(_connection_errors)
        except Exception as exc:  # noqa: BLE001 - a trigger never raises: report and end
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": f"trigger setup: {exc}"})
            return
        runner = self._runner()
        failures = 0
        reconnects = 0
        queue_empty_since: float | None = None
        errored: list[int] = []
        last_line = ""
        budget = dict(self.budget) if self.budget and self.budget.get("budget_usd") else None
        last_poll = float(budget.get("since") or time.time()) if budget else time.time()
        readable_dir = await asyncio.to_thread(lambda: bool(self.work_dir and os.path.isdir(self.work_dir)))
        readable = self.work_dir if readable_dir else None
        try:
            while True:
                try:
                    res = await runner.run(sched.status_argv(self.job_id))
                    if res.returncode != 0:
                        # A failed query is "don't know yet", never "done" (Nextflow issue 1045):
                        # accounting decides whether the tasks ended.
                        self.log.warning("status query of job %s failed (exit %s): %s", self.job_id,
                                         res.returncode, res.stderr.strip()[-300:])
                        states = {t: JobState.UNKNOWN for t in self.task_ids}
                    else:
                        states = sched.parse_status(res.stdout, self.task_ids, self.job_id)
                    acct = None
                    if not ended(states):
                        queue_empty_since = None
                    else:
                        queue_empty_since = queue_empty_since or time.time()
                        stuck = [t for t, s in states.items() if s == JobState.ERROR]
                        # file reads go to a thread: the triggerer's event loop serves every trigger
                        acct = None if stuck else await asyncio.to_thread(
                            exit_file_accounting, readable, self.task_ids, self.attempt)
                    if acct is None and ended(states):
                        if stuck and not errored:
                            self.log.warning("tasks %s stuck in an error state: deleting job %s", stuck, self.job_id)
                            await runner.run(sched.cancel_argv(self.job_id))
                            errored = stuck
                        res = await runner.run(sched.accounting_argv(self.job_id))
                        raw = {} if res.returncode != 0 else sched.parse_accounting(res.stdout, self.task_ids)
                        acct = complete_accounting(
                            sched, raw, self.task_ids, errored,
                            give_up=time.time() - queue_empty_since > self.accounting_grace_seconds)
                except connection_errors as exc:
                    failures += 1
                    reconnects += 1
                    await runner.close()
                    if failures > self.max_reconnect_attempts:
                        yield TriggerEvent({"status": "error", "job_id": self.job_id,
                                            "message": f"lost the connection {failures} times in a row: {exc}"})
                        return
                    delay = self._backoff(failures)
                    self.log.warning("connection to the cluster lost (%d/%d), retrying in %.1fs: %s", failures,
                                     self.max_reconnect_attempts, delay, exc)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if budget is not None and acct is None:
                    now = time.time()
                    running = sum(1 for st in states.values() if st == JobState.RUNNING)
                    rate = running * budget.get("task_rate_usd_per_hour", 0.0) + budget.get(
                        "fixed_rate_usd_per_hour", 0.0)
                    before = budget["spent_usd"]
                    budget["spent_usd"] = before + rate * (now - last_poll) / 3600
                    crossed = budget["spent_usd"] > budget["budget_usd"]
                    if crossed:
                        # when the spend crossed the cap, between the last poll and this one
                        at = last_poll + (budget["budget_usd"] - before) / rate * 3600 if rate > 0 else now
                        self.log.warning("budget exceeded: %.4f USD spent of %.4f USD; cancelling job %s",
                                         budget["spent_usd"], budget["budget_usd"], self.job_id)
                        await runner.run(sched.cancel_argv(self.job_id))
                        yield TriggerEvent({"status": "budget_exceeded", "job_id": self.job_id,
                                            "spent_usd": round(budget["spent_usd"], 6),
                                            "budget_usd": budget["budget_usd"], "crossed_at": at,
                                            "cancelled_at": time.time(), "poll_seconds": self.poll_seconds,
                                            "running_tasks": running})
                        return
                    last_poll = now
                done = await asyncio.to_thread(images_done, readable) if readable else None
                line = progress_line(states, done, self.n_images, self.started_at)
                if line != last_line:
                    self.log.info("job %s: %s", self.job_id, line)
                    last_line = line
                if acct is not None:
                    yield TriggerEvent({"status": "ended", "job_id": self.job_id, "reconnects": reconnects,
                                        "spent_usd": budget["spent_usd"] if budget else None,
                                        "accounting": {str(t): _acct_dict(a) for t, a in acct.items()}})
                    return
                # Once the queue is empty, accounting usually lands within a second: ask again soon.
                await asyncio.sleep(min(self.poll_seconds, ACCOUNTING_RETRY_SECONDS) if queue_empty_since
                                    else self.poll_seconds)
        except Exception as exc:  # noqa: BLE001 - exactly one final event, never a raise
            self.log.exception("ArrayJobTrigger failed")
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": f"trigger error: {exc}"})
        finally:
            await runner.close()


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncssh

    # asyncssh.Error: handshake/protocol/disconnect (e.g. sshd restarted or MaxStartups);
    # OSError: refused TCP; TimeoutError: a wedged command or connection.
    return (OSError, asyncssh.Error, TimeoutError, asyncio.TimeoutError)
