"""``FijiArrayOperator``: run a planned project as one array job, resubmitting failed chunks.

Thin over :class:`sciops.arrays.ArrayRun` (STYLE 1): the backend gives a scheduler and a
runner; the job id and attempt are saved in ``task_state_store`` right after each
submit, so an Airflow retry of this task re-attaches to the job instead of
submitting a second one. (The Grid Engine issue makes this deferrable.)
"""
from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperator

STATE_KEY = "sciops_array"


class FijiArrayOperator(BaseOperator):
    """
    :param manifest_path: the run manifest written by ``plan`` (templated).
    :param poll_seconds: seconds between status polls (``SCIOPS_POLL_SECONDS`` overrides).
    """

    template_fields = ("manifest_path",)
    ui_color = "#b7d7e8"

    def __init__(self, *, manifest_path: str, poll_seconds: float = 5.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.manifest_path = manifest_path
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> dict[str, Any]:
        from sciops.arrays import ArrayRun, ArrayState
        from sciops.clusters import get_backend
        from sciops.pipeline import phase
        from sciops.project import read_manifest

        manifest = read_manifest(self.manifest_path)
        backend = get_backend(manifest["backend"], slots=manifest["slots"])
        store = context.get("task_state_store")
        saved = store.get(STATE_KEY) if store is not None else None

        def save_state(state: dict[str, Any]) -> None:
            if store is not None:
                store.set(STATE_KEY, state)

        poll = float(os.environ.get("SCIOPS_POLL_SECONDS", self.poll_seconds))
        run = ArrayRun(backend.scheduler(manifest["work_dir"]), backend.runner(), manifest, save_state, poll)
        with phase(manifest["run_dir"], "run_array"):
            return run.run(ArrayState.from_dict(saved) if saved else None)
