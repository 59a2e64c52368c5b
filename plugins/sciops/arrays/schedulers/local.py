"""The ``local`` scheduler: ``include/job/localq.py`` on the Airflow worker itself.

localq is a tiny array-job scheduler (spool folder + a detached server process per
job), so the local backend submits, polls and accounts exactly as Grid Engine does.
"""
from __future__ import annotations

import json
import os
import sys

from sciops import JOB_DIR
from sciops.errors import SchedulerQueryError, SubmitError
from sciops.arrays.schedulers.base import ArraySpec, JobState, QueuedJob, Scheduler, TaskAccounting, map_state

STATES = {
    "pending": JobState.PENDING,
    "running": JobState.RUNNING,
    "done": JobState.DONE,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
    "lost": JobState.FAILED,
}


class LocalScheduler(Scheduler):
    """
    :param spool: folder that holds the job folders (one per submitted array).
    :param slots: tasks run at once on this machine.
    :param python: interpreter that runs localq (any Python 3).
    """

    name = "local"

    def __init__(self, spool: str, slots: int | None = None, python: str | None = None,
                 localq: str | None = None):
        self.spool = str(spool)
        self.slots = slots or os.cpu_count() or 1
        self.python = python or sys.executable
        self.localq = localq or str(JOB_DIR / "localq.py")

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, self.localq, *args]

    def submit_argv(self, spec: ArraySpec) -> list[str]:
        slots = min(self.slots, spec.max_parallel) if spec.max_parallel else self.slots
        argv = self._cmd("submit", "--spool", self.spool, "--name", spec.name, "--slots", str(slots),
                         "--tasks", ",".join(map(str, spec.task_ids)), "--log-dir", spec.log_dir,
                         "--workdir", spec.workdir)
        # one machine: a slot's runner goes on with the array's next chunks in its warm JVM (sciops_task.py's
        # chaining; a claim file's holder can be seen alive here, which a cluster's nodes cannot do for each other)
        env = {**spec.env, "SCIOPS_CHAIN": ",".join(map(str, spec.task_ids))}
        for key, value in sorted(env.items()):
            argv += ["--env", f"{key}={value}"]
        return argv + ["--", *spec.command]

    def parse_submit(self, stdout: str) -> str:
        job_id = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        if not job_id.startswith("local-"):
            raise SubmitError(f"local: no job id in submit output {stdout!r}")
        return job_id

    def queue_find_argv(self, name: str) -> list[str]:
        return self._cmd("find", "--spool", self.spool, name)   # the spool keeps ended jobs too

    def parse_queue_find(self, stdout: str, name: str) -> set[str]:
        return {line.strip() for line in stdout.splitlines() if line.strip().startswith("local-")}

    def queue_list_argv(self, prefix: str) -> list[str]:
        return self._cmd("list", "--spool", self.spool)   # the jobs still running; the prefix is matched here

    def parse_queue_list(self, stdout: str, prefix: str) -> list[QueuedJob]:
        try:
            rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        except ValueError as exc:
            raise SchedulerQueryError(f"local: unreadable job list {stdout[:200]!r}") from exc
        return [QueuedJob(r["id"], r["name"], r.get("workdir")) for r in rows if r["name"].startswith(prefix)]

    def status_argv(self, job_id: str) -> list[str]:
        return self._cmd("status", "--spool", self.spool, job_id)

    def parse_status(self, stdout: str, task_ids: list[int], job_id: str = "") -> dict[int, JobState]:
        try:
            raw = json.loads(stdout)
        except ValueError as exc:
            raise SchedulerQueryError(f"local: unreadable status {stdout[:200]!r}") from exc
        states = {int(t): map_state(STATES, s, self.name) for t, s in raw.items()}
        return {t: states.get(t, JobState.UNKNOWN) for t in task_ids}

    def accounting_argv(self, job_id: str) -> list[str]:
        return self._cmd("acct", "--spool", self.spool, job_id)

    def parse_accounting(self, stdout: str, task_ids: list[int]) -> dict[int, TaskAccounting]:
        try:
            raw = json.loads(stdout)
        except ValueError as exc:
            raise SchedulerQueryError(f"local: unreadable accounting {stdout[:200]!r}") from exc
        out = {}
        for t, rec in raw.items():
            seconds = rec["end"] - rec["start"] if rec.get("end") and rec.get("start") else None
            reason = ""
            if rec.get("signal"):
                reason = f"killed by signal {rec['signal']}"
            elif rec["state"] == "lost":
                reason = "lost: the localq server died"
            elif rec.get("exit_code"):
                reason = f"exit code {rec['exit_code']}"
            out[int(t)] = TaskAccounting(int(t), map_state(STATES, rec["state"], self.name), rec.get("exit_code"),
                                         seconds, rec.get("max_rss_mb"), reason)
        return out

    def cancel_argv(self, job_id: str) -> list[str]:
        return self._cmd("cancel", "--spool", self.spool, job_id)
