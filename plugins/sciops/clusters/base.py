"""ClusterBackend: a cluster that exists, reached through a runner, driven through a scheduler.

Creating and deleting an ephemeral cluster is not a backend method: it is the job of the
``create_cluster`` / ``delete_cluster`` tasks (``sciops.operators.cluster``), which wait in
the triggerer.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from sciops.commands import CommandRunner
from sciops.schedulers.base import Scheduler


class ClusterBackend(ABC):
    name = "base"
    #: Python 3 that runs the task runner on the compute nodes.
    python = "python3"

    @abstractmethod
    def runner(self) -> CommandRunner: ...

    @abstractmethod
    def scheduler(self, work_dir: str) -> Scheduler: ...
