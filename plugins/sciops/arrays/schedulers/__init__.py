"""Schedulers: pure, table-driven. Build argv, parse output. No SSH, no Airflow.

One module per scheduler, named as the scheduler (``sciops.arrays.schedulers.<name>``), and
one row in :data:`SCHEDULER_CLASSES`. A backend names the schedulers it drives
(``ClusterBackend.schedulers``); the modules are imported only when a scheduler is made.
"""
from __future__ import annotations

import importlib

from sciops.arrays.schedulers.base import ArraySpec, JobState, Scheduler, TaskAccounting

#: Scheduler name → its class in ``sciops.arrays.schedulers.<name>``.
SCHEDULER_CLASSES = {"local": "LocalScheduler", "sge": "SGEScheduler", "slurm": "SlurmScheduler"}


def scheduler_class(name: str) -> type[Scheduler]:
    """The class of the scheduler called ``name`` (``local``, ``sge``, ``slurm``)."""
    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{name}"), SCHEDULER_CLASSES[name])


def get_scheduler(name: str, **options) -> Scheduler:
    """The scheduler called ``name``, made with ``options``."""
    return scheduler_class(name)(**options)


__all__ = ["ArraySpec", "JobState", "SCHEDULER_CLASSES", "Scheduler", "TaskAccounting", "get_scheduler",
           "scheduler_class"]
