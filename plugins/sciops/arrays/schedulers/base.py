"""The scheduler interface every backend implements (local, Grid Engine, Slurm).

A scheduler is a few argv builders, a few parsers and a table from native states
to :class:`JobState` (STYLE 4). It receives a runner that executes argv and never
talks to a machine itself (STYLE 5), so it is tested on saved real output.
"""
from __future__ import annotations

import enum
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from sciops.errors import CommandError, OutcomeUnknown, SchedulerQueryError, SubmitError
from sciops.arrays.commands import CommandRunner

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    PENDING = "pending"
    HELD = "held"
    RUNNING = "running"
    DONE = "done"            # ended with exit code 0
    FAILED = "failed"        # ended with a non-zero exit, a signal, or lost
    CANCELLED = "cancelled"
    LOST = "lost"            # the node went away under it (Slurm NODE_FAIL/PREEMPTED, SGE failed 19): not the
    #                          images' fault, so resubmitted without spending one of the chunk's attempts
    ERROR = "error"          # stuck in an error state the scheduler will not leave by itself (SGE Eqw)
    UNKNOWN = "unknown"      # not in the queue and not (yet) in accounting: ask again

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.LOST)


def map_state(table: dict[str, JobState], native: str, scheduler: str) -> JobState:
    """Translate a native state; unknown ones become UNKNOWN with a warning, never DONE."""
    try:
        return table[native]
    except KeyError:
        log.warning("%s: unknown job state %r, treating it as unknown", scheduler, native)
        return JobState.UNKNOWN


@dataclass(frozen=True)
class ArraySpec:
    """One array job: ``command`` runs once per index in ``task_ids``.

    :param name: job name shown by the scheduler (derived from the run id).
    :param command: argv of one task; the task reads its index from the scheduler's environment.
    :param task_ids: 1-based indices to run (a resubmission passes only the failed ones).
    :param log_dir: where each task's stdout/stderr go.
    :param workdir: the task's working directory.
    :param memory_mb: memory one task may use.
    :param cpus: cores one task may use.
    :param max_parallel: at most this many tasks at once (0 = no limit).
    :param env: extra environment variables for every task.
    """

    name: str
    command: list[str]
    task_ids: list[int]
    log_dir: str
    workdir: str
    memory_mb: int = 2048
    cpus: int = 1
    max_parallel: int = 0
    time_limit_s: int = 0
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskAccounting:
    """What accounting knows about one finished task."""

    task_id: int
    state: JobState
    exit_code: int | None = None
    seconds: float | None = None
    max_rss_mb: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class QueuedJob:
    """A job still in the queue (pending, running, or being deleted), as listed by name.

    :param workdir: the folder it runs in, when the scheduler says (a run's ``work/``).
    """

    job_id: str
    name: str
    workdir: str | None = None


def task_map_env(task_ids: list[int]) -> dict[str, str]:
    """Array index i runs chunk ``task_ids[i-1]``: say so when that is not the identity.

    Grid Engine arrays are one range (``-t 1-N``), so a resubmission of chunks 2, 5, 9
    is submitted as ``-t 1-3`` with ``SCIOPS_TASK_MAP=2:5:9`` (the task runner reads it;
    colons, because ``qsub -v`` splits its value at commas).
    """
    if task_ids == list(range(1, len(task_ids) + 1)):
        return {}
    return {"SCIOPS_TASK_MAP": ":".join(map(str, task_ids))}


def index_to_task(index: int, task_ids: list[int]) -> int | None:
    """The chunk that array index ``index`` (1-based) ran, or None if out of range."""
    return task_ids[index - 1] if 1 <= index <= len(task_ids) else None


class Scheduler(ABC):
    """Build argv and parse output for one batch system."""

    name: str = "base"
    #: How a task that left the queue but never reached accounting ended (after a grace period).
    missing_record = (JobState.FAILED, "no accounting record (task lost)")
    #: After a submit whose answer was lost, look for the job this often, this far apart: the
    #: submit command may still be running on the head node when the connection dropped.
    find_tries: int = 3
    find_pause_s: float = 5.0

    @abstractmethod
    def submit_argv(self, spec: ArraySpec) -> list[str]: ...

    @abstractmethod
    def parse_submit(self, stdout: str) -> str: ...

    @abstractmethod
    def status_argv(self, job_id: str) -> list[str]: ...

    @abstractmethod
    def parse_status(self, stdout: str, task_ids: list[int], job_id: str) -> dict[int, JobState]: ...

    @abstractmethod
    def accounting_argv(self, job_id: str) -> list[str]: ...

    @abstractmethod
    def parse_accounting(self, stdout: str, task_ids: list[int]) -> dict[int, TaskAccounting]: ...

    @abstractmethod
    def cancel_argv(self, job_id: str) -> list[str]: ...

    # -- finding a job by its name (job names are unique per run plan and attempt) --------
    def queue_find_argv(self, name: str) -> list[str] | None:
        """argv listing the queued or running jobs named ``name`` (None: this scheduler cannot)."""
        return None

    def parse_queue_find(self, stdout: str, name: str) -> set[str]:
        return set()

    def acct_find_argv(self, name: str) -> list[str] | None:
        """argv listing the finished jobs named ``name`` from accounting (None: the queue listing has them)."""
        return None

    def parse_acct_find(self, stdout: str, name: str) -> set[str]:
        return set()

    def queue_list_argv(self, prefix: str) -> list[str] | None:
        """argv listing the queued or running jobs whose names start with ``prefix`` (None: this scheduler cannot)."""
        return None

    def parse_queue_list(self, stdout: str, prefix: str) -> list[QueuedJob]:
        return []

    def queued(self, runner: CommandRunner, prefix: str) -> list[QueuedJob]:
        """The jobs in the queue whose names start with ``prefix``, one per job id (an ended job is not listed).

        A query that fails raises :class:`SchedulerQueryError`: "cannot tell" is never "none".
        """
        argv = self.queue_list_argv(prefix)
        if argv is None:
            raise SchedulerQueryError(f"{self.name}: cannot list jobs by name")
        try:
            stdout = runner.run(argv).stdout
        except CommandError as exc:
            raise SchedulerQueryError(f"{self.name}: cannot list the jobs named {prefix}*: {exc}") from exc
        jobs: dict[str, QueuedJob] = {}
        for job in self.parse_queue_list(stdout, prefix):
            if job.name.startswith(prefix):
                jobs.setdefault(job.job_id, job)
        return list(jobs.values())

    def find(self, runner: CommandRunner, name: str, accounting: bool = True) -> str | None:
        """The job id already submitted under ``name``, or None when there is none.

        Looks in the queue, then (``accounting``) in accounting, where a job that already
        ended is. A query that fails raises :class:`SchedulerQueryError`: "cannot tell" is
        never "no such job". Two jobs of one name mean a double submission: refused loudly.
        """
        ids: set[str] = set()
        argv = self.queue_find_argv(name)
        if argv:
            try:
                ids = self.parse_queue_find(runner.run(argv).stdout, name)
            except CommandError as exc:
                raise SchedulerQueryError(f"{self.name}: cannot list jobs named {name!r}: {exc}") from exc
        if not ids and accounting and (argv := self.acct_find_argv(name)):
            result = runner.run(argv, check=False)
            if result.returncode != 0 and not self.no_records_yet(result):
                raise SchedulerQueryError(f"{self.name}: cannot search accounting for jobs named {name!r}: exit "
                                          f"{result.returncode}: {result.stderr.strip()[-500:]}")
            ids = self.parse_acct_find(result.stdout, name)
        if len(ids) > 1:
            raise SubmitError(f"{self.name}: {len(ids)} jobs are named {name!r} ({', '.join(sorted(ids))}): one "
                              "attempt was submitted more than once; cancel all but the oldest, then retry the task")
        return next(iter(ids), None)

    # -- the same four operations, through a runner -------------------------------
    def submit(self, runner: CommandRunner, spec: ArraySpec, look_first: bool = False) -> str:
        """Submit ``spec`` once; its job id.

        ``look_first`` (a retried task that may have submitted before it died): a job already
        named ``spec.name`` is returned instead of submitting. A submit whose answer was lost
        (:class:`OutcomeUnknown`) is never sent again: the job is looked for by its name, and
        when it cannot be found the submit fails (a retry looks again first).
        """
        if not spec.task_ids:
            raise SubmitError(f"{self.name}: nothing to submit for {spec.name!r} (no task ids)")
        if look_first:
            found = self.find(runner, spec.name)
            if found:
                log.warning("%s: job %s named %r was submitted before (by an earlier try of this task): attaching "
                            "to it, not submitting again", self.name, found, spec.name)
                return found
        try:
            result = runner.run(self.submit_argv(spec))
        except OutcomeUnknown as exc:
            return self._after_lost_answer(runner, spec, exc)
        except CommandError as exc:
            raise SubmitError(f"{self.name}: submit of {spec.name!r} refused: {exc}") from exc
        return self.parse_submit(result.stdout)

    def _after_lost_answer(self, runner: CommandRunner, spec: ArraySpec, lost: OutcomeUnknown) -> str:
        for attempt in range(1, self.find_tries + 1):
            time.sleep(self.find_pause_s)
            try:
                found = self.find(runner, spec.name)
            except SchedulerQueryError as exc:
                log.warning("%s (look %d of %d)", exc, attempt, self.find_tries)
                continue
            if found:
                log.warning("%s: the answer to submitting %r was lost (%s); found its job %s by name: attaching, "
                            "not submitting again", self.name, spec.name, lost.stderr, found)
                return found
        raise SubmitError(f"{self.name}: the answer to submitting {spec.name!r} was lost ({lost.stderr}) and no job "
                          f"of that name was found in {self.find_tries} looks over {self.find_tries * self.find_pause_s:.0f}"
                          " s; not submitted again. A retry of the task looks for it once more before submitting.") \
            from lost

    def status(self, runner: CommandRunner, job_id: str, task_ids: list[int]) -> dict[int, JobState]:
        """State of every task of the job, from ONE scheduler call."""
        try:
            result = runner.run(self.status_argv(job_id))
        except CommandError as exc:
            raise SchedulerQueryError(f"{self.name}: status of job {job_id} unknown: {exc}") from exc
        return self.parse_status(result.stdout, task_ids, job_id)

    def accounting(self, runner: CommandRunner, job_id: str, task_ids: list[int]) -> dict[int, TaskAccounting]:
        """Per-task accounting; tasks not (yet) recorded are absent: ask again later."""
        result = runner.run(self.accounting_argv(job_id), check=False)
        if result.returncode != 0 and not self.no_records_yet(result):
            raise SchedulerQueryError(f"{self.name}: accounting of job {job_id} unavailable: exit "
                                      f"{result.returncode}: {result.stderr.strip()[-500:]}")
        return self.parse_accounting(result.stdout, task_ids)

    def no_records_yet(self, result) -> bool:
        """Whether a non-zero accounting exit just means "nothing recorded for this job yet"."""
        return False

    def cancel(self, runner: CommandRunner, job_id: str) -> None:
        # Cancelling a job that already ended is not an error (STYLE 10): qdel, scancel and localq answer
        # "no such job" for it, and that exit status is not checked.
        runner.run(self.cancel_argv(job_id), check=False)
