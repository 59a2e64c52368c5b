"""``ArrayJobTrigger``: watch an array job from the triggerer, without holding a worker.

Small and serializable (STYLE 3): JSON arguments only, ``serialize()`` in step with
``__init__``. One connection per head node is held for the whole wait and shared by every
trigger of the triggerer that watches the same head node (:class:`sciops.arrays.ssh.SharedCommandRunner`);
each poll is ONE status command whatever the array size, and that command is shared too: the
status listing answers for every job, so twenty runs on one cluster send one per poll; connection
errors are retried with backoff and kept apart from job failures; exactly one final
event; nothing raises out of ``run()``. What to do after each answer is decided by
:class:`sciops.arrays.watch.Watch`, the same pure step the worker's loop drives; this is only
its asyncio loop (commands awaited, file reads in threads).

Events: the watch's end event (``ended`` with every task's accounting, ``budget_exceeded``,
``timeout``) plus ``reconnects``, or ``{"status": "error", "job_id", "message"}``.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sciops.arrays.watch import ACCOUNTING_GRACE_SECONDS

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.


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
    :param deadline: ``time.time()`` past which the job is cancelled (the run's one array timeout).
    :param deferred_at: when the task deferred; no event is sent sooner than
        ``min_defer_seconds`` after it (Airflow's stale-executor-event race: see ``sciops.triggers``).
    """

    def __init__(self, job_id: str, task_ids: list[int], scheduler: str, scheduler_options: dict[str, Any],
                 ssh_conn_id: str | None, poll_seconds: float = 5.0, n_images: int = 0,
                 work_dir: str | None = None, started_at: float | None = None, max_reconnect_attempts: int = 10,
                 accounting_grace_seconds: float = ACCOUNTING_GRACE_SECONDS, attempt: int = 1,
                 ssh_host: str | None = None, budget: dict[str, float] | None = None,
                 deferred_at: float | None = None, min_defer_seconds: float | None = None,
                 ssh_host_key: str | None = None, deadline: float | None = None):
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
        self.deadline = deadline
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
            "deadline": self.deadline,
        })

    def _runner(self):
        from sciops.arrays.ssh import SharedCommandRunner

        return SharedCommandRunner(self.ssh_conn_id, host=self.ssh_host, host_key=self.ssh_host_key)

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
        from sciops.arrays.workdir import exit_file_accounting, exited, images_done, progress_line
        from sciops.arrays.ssh import async_connection_errors
        from sciops.errors import SchedulerQueryError
        from sciops.arrays.schedulers import get_scheduler
        from sciops.arrays.watch import CANCEL, END, EXIT_FILES, SLEEP, STATUS, WAKE_SECONDS, Watch

        try:
            sched = get_scheduler(self.scheduler, **self.scheduler_options)
            # importing asyncssh takes ~0.35 s: in a thread, not in the triggerer's event loop
            connection_errors = await asyncio.to_thread(async_connection_errors)
            watch = Watch(self.job_id, self.task_ids, sched.missing_record, poll_seconds=self.poll_seconds,
                          grace_seconds=self.accounting_grace_seconds, budget=self.budget, deadline=self.deadline)
            # file reads go to a thread: the triggerer's event loop serves every trigger
            readable_dir = await asyncio.to_thread(lambda: bool(self.work_dir and os.path.isdir(self.work_dir)))
        except Exception as exc:  # noqa: BLE001 - a trigger never raises: report and end
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": f"trigger setup: {exc}"})
            return
        readable = self.work_dir if readable_dir else None
        runner = self._runner()
        failures = reconnects = 0
        last_line = ""
        actions = watch.start()
        try:
            while True:
                try:
                    ask, woke = STATUS, False
                    for action in actions:
                        if action.kind == END:
                            yield TriggerEvent({**action.event, "reconnects": reconnects})
                            return
                        if action.kind == CANCEL:
                            self.log.warning("cancelling job %s: %s", self.job_id, action.reason)
                            await runner.run(sched.cancel_argv(self.job_id))
                        elif action.kind == SLEEP and action.wake and readable:
                            # the last wave: wake as soon as its runners all wrote their exit files
                            until = time.monotonic() + action.seconds
                            while (left := until - time.monotonic()) > 0:
                                await asyncio.sleep(min(WAKE_SECONDS, left))
                                if await asyncio.to_thread(exited, readable, action.wake, self.attempt):
                                    woke = True   # the next status must be newer than those exit files
                                    break
                        elif action.kind == SLEEP:
                            await asyncio.sleep(action.seconds)
                        else:
                            ask = action.kind
                    if ask == STATUS:
                        # the listing answers for every job: watchers of other runs on this head node share it
                        res = await runner.run(sched.status_argv(self.job_id),
                                               share_for=0.0 if woke else self.poll_seconds)
                        states = None
                        try:
                            if res.returncode == 0:
                                states = sched.parse_status(res.stdout, self.task_ids, self.job_id)
                        except SchedulerQueryError as exc:
                            self.log.warning("%s", exc)
                        if states is None:
                            # A failed query is "don't know yet", never "done" (Nextflow issue 1045).
                            self.log.warning("status query of job %s failed (exit %s): %s", self.job_id,
                                             res.returncode, res.stderr.strip()[-300:])
                        nxt = watch.on_status(states, time.time())
                        done = await asyncio.to_thread(images_done, readable) if readable else None
                        line = progress_line(watch.states, done, self.n_images, self.started_at)
                        if line != last_line:
                            self.log.info("job %s: %s", self.job_id, line)
                            last_line = line
                    elif ask == EXIT_FILES:
                        nxt = watch.on_exit_files(await asyncio.to_thread(
                            exit_file_accounting, readable, self.task_ids, self.attempt), time.time())
                    else:
                        res = await runner.run(sched.accounting_argv(self.job_id))
                        nxt = watch.on_accounting({} if res.returncode != 0 else
                                                  sched.parse_accounting(res.stdout, self.task_ids), time.time())
                except connection_errors as exc:
                    failures += 1
                    reconnects += 1   # the shared connection was closed: the next command opens it again
                    if failures > self.max_reconnect_attempts:
                        yield TriggerEvent({"status": "error", "job_id": self.job_id,
                                            "message": f"lost the connection {failures} times in a row: {exc}"})
                        return
                    delay = self._backoff(failures)
                    self.log.warning("connection to the cluster lost (%d/%d), retrying in %.1fs: %s", failures,
                                     self.max_reconnect_attempts, delay, exc)
                    await asyncio.sleep(delay)
                    actions = [a for a in actions if a.kind != SLEEP] or [watch.start()[0]]  # the same again
                    continue
                failures = 0
                actions = nxt
        except Exception as exc:  # noqa: BLE001 - exactly one final event, never a raise
            self.log.exception("ArrayJobTrigger failed")
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": f"trigger error: {exc}"})
        finally:
            await runner.close()

