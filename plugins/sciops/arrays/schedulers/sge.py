"""Son of Grid Engine / Grid Engine: ``qsub``, ``qstat -xml``, ``qacct``, ``qdel``.

Pure (STYLE 4, 5): argv builders, parsers and a state table; a runner executes them
(locally, or on a head node over SSH). Facts it relies on, seen on gridengine 8.1.9:

* ``qsub -terse -t 1-4`` prints ``2.1-4:1``; arrays are one range, so a resubmission of
  scattered chunks goes out as ``-t 1-K`` with ``SCIOPS_TASK_MAP`` (see ``task_map_env``);
  ``-v`` splits values at commas.
* ``-b y -shell no`` runs the command with its argv as given (no shell re-parsing).
* ``qstat -xml -u '*'``: pending tasks are collapsed (``<tasks>3,4</tasks>`` or
  ``1-4:1``), running ones are one entry each; finished tasks are simply absent, which
  means "ask qacct", never "done".
* ``qacct -j``: one record per task run (take the last); ``failed 0`` + ``exit_status``
  is the task's own exit; ``failed 100`` / exit 137 is qdel or a kill of the job shell;
  ``failed 37`` is an ``h_rt``/``h_vmem`` limit enforced by qmaster; a pending task that
  was deleted leaves no record; "job id N not found" means no record yet.
* ``qdel`` and ``kill -9`` of a running task both end ``failed 100`` / exit 137. Tasks are
  submitted ``-notify``: qdel sends SIGUSR2 first (the queue's ``notify`` time before the
  kill) and the runner stops with exit 140 (128 + SIGUSR2), so exit 140 is a deletion and
  ``failed 100`` without it a kill (resubmitted like any failure).
* A host that dies under a task (execd killed, node rebooted): when its execd comes back it
  reports the task ``failed 19`` ("before writing exit_status"): a lost node. A host that
  never comes back leaves its tasks "running" until the qmaster gives up on it: set the
  global ``reschedule_unknown`` (``qconf -mconf``) so that Grid Engine reschedules them.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from sciops.errors import SchedulerQueryError, SubmitError
from sciops.arrays.schedulers.base import (ArraySpec, JobState, QueuedJob, Scheduler, TaskAccounting, index_to_task,
                                           map_state, task_map_env)

#: qstat state letters → JobState. Compound states are matched whole.
STATES = {
    "qw": JobState.PENDING, "hqw": JobState.HELD, "hRwq": JobState.HELD, "hr": JobState.HELD,
    "r": JobState.RUNNING, "t": JobState.RUNNING, "Rr": JobState.RUNNING, "Rt": JobState.RUNNING,
    "s": JobState.HELD, "ts": JobState.HELD, "S": JobState.HELD, "tS": JobState.HELD, "T": JobState.HELD,
    "tT": JobState.HELD, "Rs": JobState.HELD, "RS": JobState.HELD, "RT": JobState.HELD,
    # being deleted: still holds its slot until it is gone; accounting decides the end
    "dr": JobState.RUNNING, "dt": JobState.RUNNING, "dRr": JobState.RUNNING, "ds": JobState.RUNNING,
    "dS": JobState.RUNNING, "dT": JobState.RUNNING, "dqw": JobState.PENDING, "dhqw": JobState.PENDING,
    # error states SGE will not leave by itself (e.g. an unwritable -o folder)
    "Eqw": JobState.ERROR, "Ehqw": JobState.ERROR, "EhRqw": JobState.ERROR,
}

#: qacct ``failed`` codes worth a sentence (the rest are reported by number).
FAILED_REASONS = {
    1: "assumedly before job: the job could not be started on the host",
    7: "before prolog",
    19: "before writing exit status: the execution host lost the job (node down or rebooted)",
    21: "in recognizing job",
    25: "rescheduling",
    26: "opening the job's output file failed (is the log folder writable?)",
    27: "searching the requested shell",
    28: "changing to the working directory failed",
    37: "killed for exceeding a limit enforced by qmaster (h_rt, h_cpu or h_vmem)",
    100: "killed by the scheduler: qdel, or a signal to the job shell",
}

#: failed codes that mean the node, not the task, went wrong: resubmitted without spending an attempt.
LOST_NODE = {19}
#: The runner's exit after SIGUSR2, which ``-notify`` sends before qdel's kill (sciops_task.EXIT_DELETED).
EXIT_DELETED = 140

JOB_ID = re.compile(r"^(\d+)(?:\.\S+)?$")


def parse_task_ranges(text: str) -> list[int]:
    """``"3,4"``, ``"1-4:1"``, ``"5-9:2,12"`` → task indices."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if not m:
            raise ValueError(f"unreadable task range {part!r}")
        start = int(m.group(1))
        end = int(m.group(2) or start)
        step = int(m.group(3) or 1)
        out.extend(range(start, end + 1, step))
    return out


def _seconds(value: str) -> float | None:
    m = re.match(r"^([\d.]+)s?$", value.strip())
    return float(m.group(1)) if m else None


def _megabytes(value: str) -> float | None:
    m = re.match(r"^([\d.]+)\s*([KMGT]?)B?$", value.strip())
    if not m:
        return None
    scale = {"": 1 / 1024 / 1024, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return round(float(m.group(1)) * scale, 3)


class SGEScheduler(Scheduler):
    """
    :param queue: ``-q`` queue (None = the cluster's default).
    :param project: ``-P`` accounting project.
    :param parallel_env: PE for multi-slot tasks (``-pe <pe> <cpus>`` when cpus > 1).
    :param memory_resource: complex that carries memory per slot (``h_vmem`` limits *virtual*
        memory: a JVM reserves far more than its heap, so request ``-Xmx`` + ~2.5 GB), or None.
    :param exclusive: ``-l exclusive=true`` (needs the ``exclusive`` complex).
    :param one_per_host: ``-l fiji=1`` (a consumable with host value 1: one ImageJ per node).
    """

    name = "sge"
    missing_record = (JobState.CANCELLED, "no accounting record: deleted before it started (qdel)")

    def __init__(self, queue: str | None = None, project: str | None = None, parallel_env: str = "smp",
                 memory_resource: str | None = None, exclusive: bool = False, one_per_host: bool = False,
                 vmem_overhead_mb: int = 2560):
        self.queue, self.project, self.parallel_env = queue, project, parallel_env
        self.memory_resource, self.exclusive, self.one_per_host = memory_resource, exclusive, one_per_host
        self.vmem_overhead_mb = vmem_overhead_mb

    def submit_argv(self, spec: ArraySpec) -> list[str]:
        # chaining (sciops_node.claims): a task's runner goes on with the array's chunks that no task has begun
        # in its warm JVM; the claims are files on the shared filesystem, a holder on another node is seen alive
        # by its heartbeat (colons: -v splits at commas)
        env = {**spec.env, **task_map_env(spec.task_ids), "SCIOPS_CHAIN": ":".join(map(str, spec.task_ids))}
        argv = ["qsub", "-terse", "-notify", "-N", spec.name, "-t", f"1-{len(spec.task_ids)}",
                "-o", spec.log_dir.rstrip("/") + "/", "-e", spec.log_dir.rstrip("/") + "/", "-wd", spec.workdir]
        for key, value in sorted(env.items()):
            # -v splits at commas: a value holding one would become several variables.
            if "," in value:
                raise SubmitError(f"sge: environment value {key}={value!r} holds a comma, which qsub -v splits")
            argv += ["-v", f"{key}={value}"]
        if spec.max_parallel:
            argv += ["-tc", str(spec.max_parallel)]
        if spec.cpus > 1:
            argv += ["-pe", self.parallel_env, str(spec.cpus)]
        if self.memory_resource:
            per_slot = -(-(spec.memory_mb + self.vmem_overhead_mb) // max(spec.cpus, 1))
            argv += ["-l", f"{self.memory_resource}={per_slot}M"]
        if spec.time_limit_s:
            argv += ["-l", f"h_rt={spec.time_limit_s}"]
        if self.exclusive:
            argv += ["-l", "exclusive=true"]
        if self.one_per_host:
            argv += ["-l", "fiji=1"]
        if self.queue:
            argv += ["-q", self.queue]
        if self.project:
            argv += ["-P", self.project]
        return argv + ["-b", "y", "-shell", "no", *spec.command]

    def parse_submit(self, stdout: str) -> str:
        line = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
        m = JOB_ID.match(line)
        if not m:
            raise SubmitError(f"sge: no job id in qsub output {stdout!r}")
        return m.group(1)

    def status_argv(self, job_id: str) -> list[str]:
        # One call for every task of every job: cheap for qmaster, whatever the array size.
        return ["qstat", "-xml", "-u", "*"]

    def parse_status(self, stdout: str, task_ids: list[int], job_id: str) -> dict[int, JobState]:
        """States of ``job_id``'s tasks; tasks not listed are UNKNOWN (ask qacct)."""
        try:
            root = ET.fromstring(stdout)
        except ET.ParseError as exc:
            raise SchedulerQueryError(f"sge: unreadable qstat -xml output: {exc}") from exc
        states = {t: JobState.UNKNOWN for t in task_ids}
        for job in root.iter("job_list"):
            if job.findtext("JB_job_number") != str(job_id):
                continue
            state = map_state(STATES, (job.findtext("state") or "").strip(), self.name)
            tasks = job.findtext("tasks")
            for index in parse_task_ranges(tasks) if tasks else [1]:
                task = index_to_task(index, task_ids)
                if task is not None:
                    states[task] = state
        return states

    def queue_find_argv(self, name: str) -> list[str]:
        return ["qstat", "-xml", "-u", "*"]   # qstat -xml gives names whole (plain qstat cuts them at 10)

    def parse_queue_find(self, stdout: str, name: str) -> set[str]:
        try:
            root = ET.fromstring(stdout)
        except ET.ParseError as exc:
            raise SchedulerQueryError(f"sge: unreadable qstat -xml output: {exc}") from exc
        return {job.findtext("JB_job_number") for job in root.iter("job_list") if job.findtext("JB_name") == name}

    def queue_list_argv(self, prefix: str) -> list[str] | None:
        # qstat -j takes a job-name pattern and tells each job's folder (JB_cwd); "-xml" answers exit 0 with
        # <unknown_jobs> when no job matches. A prefix holding a pattern character of its own cannot be asked.
        if any(c in prefix for c in "*?[]\\"):
            return None
        return ["qstat", "-xml", "-j", prefix + "*"]

    def parse_queue_list(self, stdout: str, prefix: str) -> list[QueuedJob]:
        try:
            root = ET.fromstring(stdout)
        except ET.ParseError as exc:
            raise SchedulerQueryError(f"sge: unreadable qstat -xml -j output: {exc}") from exc
        if root.tag == "unknown_jobs":
            return []
        if root.tag != "detailed_job_info":
            raise SchedulerQueryError(f"sge: unexpected qstat -xml -j answer <{root.tag}>")
        return [QueuedJob(el.findtext("JB_job_number"), el.findtext("JB_job_name") or "", el.findtext("JB_cwd"))
                for el in root.findall("djob_info/element") if el.findtext("JB_job_number")]

    def acct_find_argv(self, name: str) -> list[str]:
        return ["qacct", "-j", name]           # qacct -j takes a job name as well as an id

    def parse_acct_find(self, stdout: str, name: str) -> set[str]:
        ids, jobname = set(), None
        for line in stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "jobname":
                jobname = value.strip()
            elif key == "jobnumber" and jobname == name:
                ids.add(value.strip())
            elif line.startswith("="):
                jobname = None
        return ids

    def accounting_argv(self, job_id: str) -> list[str]:
        return ["qacct", "-j", str(job_id)]

    def no_records_yet(self, result) -> bool:
        return "not found" in (result.stderr + result.stdout)

    def parse_accounting(self, stdout: str, task_ids: list[int]) -> dict[int, TaskAccounting]:
        out: dict[int, TaskAccounting] = {}
        for block in re.split(r"^=+\s*$", stdout, flags=re.MULTILINE):
            fields = {}
            for line in block.strip().splitlines():
                key, _, value = line.partition(" ")
                fields[key] = value.strip()
            if "jobnumber" not in fields:
                continue
            index = int(fields["taskid"]) if fields.get("taskid", "").isdigit() else 1
            task = index_to_task(index, task_ids)
            if task is None:
                continue
            failed = int(fields.get("failed", "0").split()[0] or 0)
            exit_code = int(fields.get("exit_status", "0").split()[0] or 0)
            if failed == 0 and exit_code == 0:
                state, reason = JobState.DONE, ""
            elif exit_code == EXIT_DELETED and failed in (0, 100):
                state, reason = JobState.CANCELLED, f"deleted (qdel) (failed {failed}, exit {exit_code})"
            elif failed in LOST_NODE:
                state, reason = JobState.LOST, f"failed {failed}: {FAILED_REASONS[failed]} (exit {exit_code})"
            elif failed == 100:
                state, reason = JobState.FAILED, f"{FAILED_REASONS[100]} (failed 100, exit {exit_code})"
            elif failed:
                state = JobState.FAILED
                reason = f"failed {failed}: {FAILED_REASONS.get(failed, fields['failed'])} (exit {exit_code})"
            else:
                state, reason = JobState.FAILED, f"exit code {exit_code}"
            # several records for one task (rescheduled): the last one wins
            out[task] = TaskAccounting(task, state, exit_code, _seconds(fields.get("ru_wallclock", "")),
                                       _megabytes(fields.get("maxvmem", "")), reason)
        return out

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["qdel", str(job_id)]
