"""The scheduler interface every backend implements (local, Grid Engine, Slurm).

A scheduler is a few argv builders, a few parsers and a table from native states
to :class:`JobState` (STYLE 4). It receives a runner that executes argv and never
talks to a machine itself (STYLE 5), so it is tested on saved real output.
"""
from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from sciops.errors import CommandError, SchedulerQueryError, SubmitError
from sciops.runners import CommandRunner

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    PENDING = "pending"
    HELD = "held"
    RUNNING = "running"
    DONE = "done"            # ended with exit code 0
    FAILED = "failed"        # ended with a non-zero exit, a signal, or lost
    CANCELLED = "cancelled"
    ERROR = "error"          # stuck in an error state the scheduler will not leave by itself (SGE Eqw)
    UNKNOWN = "unknown"      # not in the queue and not (yet) in accounting: ask again

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


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

    # -- the same four operations, through a runner -------------------------------
    def submit(self, runner: CommandRunner, spec: ArraySpec) -> str:
        if not spec.task_ids:
            raise SubmitError(f"{self.name}: nothing to submit for {spec.name!r} (no task ids)")
        try:
            result = runner.run(self.submit_argv(spec))
        except CommandError as exc:
            raise SubmitError(f"{self.name}: submit of {spec.name!r} refused: {exc}") from exc
        return self.parse_submit(result.stdout)

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
        # Cancelling a job that already ended is not an error (STYLE 10).
        runner.run(self.cancel_argv(job_id), check=False)
