"""One exception family for everything SciOps raises on purpose."""
from __future__ import annotations


class SciOpsError(Exception):
    """Base class: catch this to catch every SciOps failure."""


class ConfigError(SciOpsError):
    """A run parameter is wrong. Raised in ``validate``, before anything costs money.

    :param problems: ``(field, message)`` pairs; each message says what is wrong and how to fix it.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"{field}: {msg}" for field, msg in self.problems]
        super().__init__("invalid run configuration:\n  " + "\n  ".join(lines))

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


class CommandError(SciOpsError):
    """A command exited non-zero. Carries everything needed to see why."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        super().__init__(
            f"command {argv[0]!r} exited {returncode}: argv={argv!r}\n"
            f"stdout: {stdout.strip()[-2000:]}\nstderr: {stderr.strip()[-2000:]}"
        )


class OutcomeUnknown(CommandError):
    """A command was sent but its answer was lost (timeout, dropped link): it may or may not have run.

    Never resend such a command blindly: a ``qsub`` would be submitted twice. Look for what it
    would have made instead (``Scheduler.find``: the job by its unique name).
    """


class SubmitError(SciOpsError):
    """The scheduler did not accept a job, or its answer held no job id."""


class SchedulerQueryError(SciOpsError):
    """A status or accounting query failed: the state is unknown, not finished."""


class JobFailedError(SciOpsError):
    """An array job ended with chunks that failed every attempt."""


class BudgetExceeded(JobFailedError):
    """The run's spend passed ``budget_usd``: its job was cancelled (finished images are kept)."""


class ArrayTimeout(JobFailedError):
    """The array ran past the run's timeout: its job was cancelled (finished images are kept)."""


class ClusterError(SciOpsError):
    """A cluster could not be created, reached or deleted."""


class StorageError(SciOpsError):
    """A path or key outside the storage root, or a transfer that failed."""


class LedgerError(SciOpsError):
    """The run ledger could not be reached, did not answer in time, or refused a row (the message names
    the connection and where it points)."""
