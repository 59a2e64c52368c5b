"""The ``local`` backend: the Airflow worker itself is the cluster (the embedded default)."""
from __future__ import annotations

import os
import sys

from sciops.clusters.base import ClusterBackend
from sciops.commands import LocalRunner
from sciops.schedulers.local import LocalScheduler


class LocalBackend(ClusterBackend):
    """
    :param slots: array tasks run at once (0 = one per CPU).
    """

    name = "local"

    def __init__(self, slots: int = 0):
        self.slots = slots or os.cpu_count() or 1
        self.python = sys.executable

    def runner(self) -> LocalRunner:
        return LocalRunner()

    def scheduler(self, work_dir: str) -> LocalScheduler:
        return LocalScheduler(spool=os.path.join(work_dir, "jobs"), slots=self.slots)
