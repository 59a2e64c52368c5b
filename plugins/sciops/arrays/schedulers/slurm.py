"""Slurm: ``sbatch --parsable --array``, ``squeue``, ``sacct``, ``scancel``.

Pure (STYLE 4, 5), same interface as Grid Engine. Facts it relies on (Slurm 22.05):

* ``--array`` takes any index list (``2,5,9``), so a resubmission keeps the chunk ids as
  array indices: no task map is needed.
* ``squeue -h -r --me -o '%i|%T'`` lists every array task of the user's jobs (``-r`` expands
  pending ones) in ONE call, which answers for every run watched on the head node; a job that left the queue is absent, or squeue says "Invalid job id":
  both mean "ask sacct", never "done".
* ``sacct -P -o JobID,JobIDRaw,State,ExitCode,Elapsed,MaxRSS``: ExitCode is ``exit:signal``
  (``--json`` reports 0 for a task that exited 1, so it is not used); MaxRSS is on the
  ``.batch`` step; ``CANCELLED by <uid>`` is scancel; without cgroups a memory limit shows
  as FAILED ``0:9`` with "exceeded memory limit" in the log, not OUT_OF_MEMORY; an array
  task cancelled while pending leaves no record at all.
* A node that goes down (``scontrol update state=down``, a reclaimed spot instance) ends its
  tasks ``NODE_FAIL``; a requeueable job (``JobRequeue=1``, the default) is then held
  ~120 s (``BeginTime``) and rerun under the same id. SciOps submits ``--no-requeue``, so
  the loss is reported (``NODE_FAIL`` → LOST) and SciOps resubmits the chunk at once,
  without spending one of its attempts, and counts it.
* ``scancel`` is the only thing that ends a task ``CANCELLED``: a deletion, never a failure.
"""
from __future__ import annotations

import re

from sciops.errors import SubmitError
from sciops.arrays.commands import shell_join
from sciops.arrays.schedulers.base import ArraySpec, JobState, QueuedJob, Scheduler, TaskAccounting, map_state

STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING, "REQUEUE_HOLD": JobState.HELD, "RESV_DEL_HOLD": JobState.HELD,
    "SUSPENDED": JobState.HELD, "STOPPED": JobState.HELD, "RESIZING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED, "TIMEOUT": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED,
    "NODE_FAIL": JobState.LOST, "BOOT_FAIL": JobState.LOST, "DEADLINE": JobState.FAILED,
    "PREEMPTED": JobState.LOST, "SPECIAL_EXIT": JobState.FAILED, "REVOKED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
}

REASONS = {
    "TIMEOUT": "time limit (--time) exceeded",
    "OUT_OF_MEMORY": "out of memory (--mem exceeded)",
    "NODE_FAIL": "the node was lost (NODE_FAIL: down, crashed or reclaimed)",
    "BOOT_FAIL": "the node failed to boot",
    "PREEMPTED": "preempted by a higher-priority job",
    "DEADLINE": "deadline passed",
    "CANCELLED": "cancelled (scancel)",
}


def _seconds(elapsed: str) -> float | None:
    """``[D-]HH:MM:SS`` or ``MM:SS`` → seconds."""
    m = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$", elapsed.strip())
    if not m:
        return None
    days, hours, minutes, secs = (float(g) if g else 0.0 for g in m.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + secs


def _megabytes(rss: str) -> float | None:
    m = re.match(r"^([\d.]+)([KMGT]?)$", rss.strip())
    if not m:
        return None
    return round(float(m.group(1)) * {"": 1 / 1048576, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1048576}[m.group(2)], 3)


class SlurmScheduler(Scheduler):
    """
    :param partition: ``--partition`` (None = the cluster's default).
    :param account: ``--account`` for accounting.
    :param exclusive: ``--exclusive`` (a node per task).
    :param gres: ``--gres`` request, e.g. ``fiji:1`` where the cluster defines such a resource.
    """

    name = "slurm"
    missing_record = (JobState.CANCELLED, "no accounting record: cancelled before it started (scancel)")

    def __init__(self, partition: str | None = None, account: str | None = None, exclusive: bool = False,
                 gres: str | None = None, **_ignored):
        self.partition, self.account, self.exclusive, self.gres = partition, account, exclusive, gres

    def submit_argv(self, spec: ArraySpec) -> list[str]:
        array = ",".join(map(str, spec.task_ids))
        if spec.max_parallel:
            array += f"%{spec.max_parallel}"
        for key, value in spec.env.items():
            if "," in value:
                raise SubmitError(f"slurm: environment value {key}={value!r} holds a comma, which --export splits")
        export = ",".join(["ALL", *(f"{k}={v}" for k, v in sorted(spec.env.items()))])
        log = spec.log_dir.rstrip("/")
        argv = ["sbatch", "--parsable", f"--array={array}", f"--job-name={spec.name}",
                f"--output={log}/%x.%A.%a.out", f"--error={log}/%x.%A.%a.err", f"--chdir={spec.workdir}",
                f"--export={export}", f"--mem={spec.memory_mb}M", f"--cpus-per-task={spec.cpus}",
                "--no-requeue"]   # a lost node comes back as NODE_FAIL, at once: SciOps resubmits (see above)
        if spec.time_limit_s:
            argv.append(f"--time={-(-spec.time_limit_s // 60)}")   # whole minutes
        if self.exclusive:
            argv.append("--exclusive")
        if self.gres:
            argv.append(f"--gres={self.gres}")
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if self.account:
            argv.append(f"--account={self.account}")
        # --wrap runs its string with /bin/sh: every word quoted.
        return argv + [f"--wrap={shell_join(spec.command)}"]

    def parse_submit(self, stdout: str) -> str:
        line = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
        m = re.match(r"^(\d+)(?:;\S+)?$", line)
        if not m:
            raise SubmitError(f"slurm: no job id in sbatch output {stdout!r}")
        return m.group(1)

    def status_argv(self, job_id: str) -> list[str]:
        # every job of this user, not only job_id: one answer serves every run watched on this head node
        return ["squeue", "--noheader", "--array", "--me", "--format=%i|%T"]

    def parse_status(self, stdout: str, task_ids: list[int], job_id: str) -> dict[int, JobState]:
        states = {t: JobState.UNKNOWN for t in task_ids}
        for line in stdout.splitlines():
            if "|" not in line:
                continue
            jid, native = (x.strip() for x in line.split("|", 1))
            m = re.match(rf"^{re.escape(str(job_id))}_(\d+)$", jid)
            if m and int(m.group(1)) in states:
                states[int(m.group(1))] = map_state(STATES, native.split()[0], self.name)
        return states

    def queue_find_argv(self, name: str) -> list[str]:
        return ["squeue", "--noheader", f"--name={name}", "--format=%F|%j"]   # %F: the array's job id

    def parse_queue_find(self, stdout: str, name: str) -> set[str]:
        return {jid.strip() for jid, _, jname in (line.partition("|") for line in stdout.splitlines())
                if jname.strip() == name and jid.strip().isdigit()}

    def queue_list_argv(self, prefix: str) -> list[str]:
        # squeue filters by whole names only: every job of this user, the prefix is matched here. %Z: its folder
        return ["squeue", "--noheader", "--me", "--format=%F|%j|%Z"]

    def parse_queue_list(self, stdout: str, prefix: str) -> list[QueuedJob]:
        out = []
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[0].isdigit() and parts[1].startswith(prefix):
                out.append(QueuedJob(parts[0], parts[1], parts[2] or None))
        return out

    def acct_find_argv(self, name: str) -> list[str]:
        # sacct shows today's jobs unless told otherwise; a retried task comes back within days
        return ["sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}", "--starttime=now-7days",
                "--format=JobID,JobName"]

    def parse_acct_find(self, stdout: str, name: str) -> set[str]:
        out = set()
        for line in stdout.splitlines():
            jid, _, jname = line.partition("|")
            m = re.match(r"^(\d+)", jid.strip())   # 73_1, 73_[2-4]: the array's job id
            if m and jname.strip() == name:
                out.add(m.group(1))
        return out

    def accounting_argv(self, job_id: str) -> list[str]:
        return ["sacct", "--noheader", "--parsable2", f"--jobs={job_id}",
                "--format=JobID,JobIDRaw,State,ExitCode,Elapsed,MaxRSS"]

    def parse_accounting(self, stdout: str, task_ids: list[int]) -> dict[int, TaskAccounting]:
        rows: dict[int, dict] = {}
        rss: dict[int, float] = {}
        for line in stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 6:
                continue
            jid, _raw, state, exit_code, elapsed, maxrss = parts[:6]
            m = re.match(r"^\d+_(\d+)(\.\S+)?$", jid)
            if not m:
                continue
            task = int(m.group(1))
            if task not in task_ids:
                continue
            if m.group(2):   # a step (.batch, .extern): only its memory counts
                mb = _megabytes(maxrss)
                if mb is not None:
                    rss[task] = max(rss.get(task, 0.0), mb)
                continue
            rows[task] = {"state": state, "exit": exit_code, "elapsed": elapsed}
        out = {}
        for task, row in rows.items():
            native = row["state"].split()[0].rstrip("+")
            code, _, sig = row["exit"].partition(":")
            exit_code = int(code) if code.isdigit() else None
            state = map_state(STATES, native, self.name)
            if state == JobState.DONE:
                reason = ""
            elif native in REASONS:
                reason = REASONS[native]
            elif sig and sig != "0":
                reason = f"killed by signal {sig}"
            else:
                reason = f"exit code {exit_code}"
            out[task] = TaskAccounting(task, state, exit_code, _seconds(row["elapsed"]), rss.get(task), reason)
        return out

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["scancel", str(job_id)]
