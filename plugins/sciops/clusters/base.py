"""ClusterBackend: create or attach a cluster, hand out a runner and a scheduler, tear it down."""
from __future__ import annotations

from abc import ABC, abstractmethod

from sciops.runners import CommandRunner
from sciops.schedulers.base import Scheduler


class ClusterBackend(ABC):
    name = "base"
    #: Python 3 that runs the task runner on the compute nodes.
    python = "python3"

    def create(self, cluster_name: str) -> dict:
        """Create (or find) the cluster; idempotent. Returns what later tasks need to reach it."""
        return {}

    def delete(self, cluster_name: str) -> None:
        """Delete the cluster; harmless when it is already gone."""

    @abstractmethod
    def runner(self) -> CommandRunner: ...

    @abstractmethod
    def scheduler(self, work_dir: str) -> Scheduler: ...
