"""Schedulers: pure, table-driven. Build argv, parse output. No SSH, no Airflow."""
from __future__ import annotations

from sciops.arrays.schedulers.base import ArraySpec, JobState, Scheduler, TaskAccounting


def get_scheduler(name: str, **options) -> Scheduler:
    """The scheduler called ``name`` (``local``, ``sge``, ``slurm``)."""
    if name == "local":
        from sciops.arrays.schedulers.local import LocalScheduler

        return LocalScheduler(**options)
    if name == "sge":
        from sciops.arrays.schedulers.sge import SGEScheduler

        return SGEScheduler(**options)
    if name == "slurm":
        from sciops.arrays.schedulers.slurm import SlurmScheduler

        return SlurmScheduler(**options)
    raise ValueError(f"unknown scheduler {name!r}")


__all__ = ["ArraySpec", "JobState", "Scheduler", "TaskAccounting", "get_scheduler"]
