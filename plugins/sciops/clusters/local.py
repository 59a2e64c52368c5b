"""The ``local`` backend: the Airflow worker itself is the cluster (the embedded default)."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from sciops.clusters.base import ClusterBackend

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

if TYPE_CHECKING:   # imported when used: the registry loads this module when the DAG is parsed
    from sciops.arrays.commands import LocalRunner


class LocalBackend(ClusterBackend):
    """
    :param slots: array tasks run at once (0 = one per CPU).
    """

    name = "local"
    schedulers = ("local",)
    form_sections = ("Local backend",)
    group_writable = False   # the tasks run as the worker's own user

    def __init__(self, slots: int = 0):
        self.slots = slots or os.cpu_count() or 1
        self.python = sys.executable
        self.scheduler_name = self.schedulers[0]

    @classmethod
    def options_for(cls, cfg, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"slots": cfg.slots}

    def known_slots(self) -> int:
        return self.slots

    def runner(self) -> LocalRunner:
        from sciops.arrays.commands import LocalRunner

        return LocalRunner()

    def scheduler_args(self, work_dir: str) -> dict[str, Any]:
        return {"spool": os.path.join(work_dir, "jobs"), "slots": self.slots}

    def check(self, project, airflow_run_id: str):
        from sciops.imaging.imagej import confined, require_launcher

        # ConfigError naming launcher when there is none; the tasks' macros run in the sandbox (SCIOPS_MACRO_SANDBOX)
        launcher = confined(require_launcher(self.cfg.launcher), project)
        return launcher, launcher

    def stage_in(self, storage, info) -> dict[str, Any]:
        from sciops.storage import sync

        return sync.stage_in(storage, info.project, info.project_root).as_dict()

    def stage_out(self, storage, info) -> dict[str, Any]:
        from sciops.storage import sync

        return sync.stage_out(storage, info.project, info.run_id, info.run_dir).as_dict()


Backend = LocalBackend
