"""``FijiArrayOperator``: run a planned project as one array job, resubmitting failed chunks.

One deferrable sequence (STYLE 2): submit → save ``{job_id, attempt, task_ids}`` in
``task_state_store`` → watch from the worker for ``worker_wait_seconds`` (a short array
ends there, with no deferral to race: see :mod:`sciops.triggers`) → defer to :class:`~sciops.triggers.array.ArrayJobTrigger` →
``execute_complete`` records the attempt and either resubmits the failed chunks and
defers again, or ends (with a failures list, or raising with the job ids and reasons).
A retried or restarted task finds the saved job and re-attaches: it never submits twice.
The logic lives in :class:`sciops.arrays.ArrayRun`; this class only wires it to Airflow.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

STATE_KEY = "sciops_array"
SPEND_KEY = "sciops_spend"
PHASE = "run_array"


class FijiArrayOperator(BaseOperator):
    """
    :param manifest_path: the run manifest written by ``plan`` (templated).
    :param poll_seconds: seconds between status polls (``SCIOPS_POLL_SECONDS`` overrides).
    :param deferrable: wait in the triggerer (True) or poll from the worker (False).
    :param worker_wait_seconds: with ``deferrable``, watch this long from the worker before
        deferring (``SCIOPS_WORKER_WAIT_SECONDS`` overrides; 0 defers at once): a short array
        ends here without a deferral (see ``sciops.triggers`` for why that matters).
    """

    template_fields = ("manifest_path",)
    ui_color = "#b7d7e8"

    def __init__(self, *, manifest_path: str, poll_seconds: float = 5.0, deferrable: bool = True,
                 worker_wait_seconds: float = 30.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.worker_wait_seconds = worker_wait_seconds
        self.manifest_path = manifest_path
        self.poll_seconds = poll_seconds
        self.deferrable = deferrable

    # -- the pieces, made in execute (never in __init__) --------------------------------
    def _array_run(self, context: Any):
        from sciops.arrays import ArrayRun
        from sciops.clusters import get_backend
        from sciops.project import read_manifest

        manifest = read_manifest(self.manifest_path)
        backend = get_backend(manifest["backend"], **manifest["backend_options"])
        store = context.get("task_state_store")

        def save_state(state: dict[str, Any]) -> None:
            if store is not None:
                store.set(STATE_KEY, state)

        work = Path(self.manifest_path).parent
        ti = context.get("ti")
        # A retry may follow a try that submitted and died before saving the job id: look first.
        retry = bool(ti is not None and (getattr(ti, "try_number", 1) or 1) > 1)
        run = ArrayRun(backend.scheduler(str(work)), backend.runner(), manifest, save_state, self._poll(),
                       python=backend.python, local_work_dir=str(work), retry=retry)
        saved = store.get(STATE_KEY) if store is not None else None
        return run, backend, saved, work.parent

    def _poll(self) -> float:
        return float(os.environ.get("SCIOPS_POLL_SECONDS", self.poll_seconds))

    # -- Airflow ---------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any] | None:
        from sciops.arrays import ArrayState
        from sciops.pipeline import phase, phase_start

        run, backend, saved, run_dir = self._array_run(context)
        state = ArrayState.from_dict(saved) if saved else None
        if not self.deferrable:
            with phase(run_dir, PHASE):
                return run.run(state)
        phase_start(run_dir, PHASE, keep_start=state is not None)
        if state is None:
            state = run.start()
        else:
            self.log.info("re-attaching to %s job %s (attempt %d)", run.scheduler.name, state.job_id, state.attempt)
        # Watch the first seconds from here: an array that ends in them never defers, so it
        # cannot meet Airflow's stale-event race after a deferral (see sciops.triggers).
        window = self._worker_wait()
        if window > 0:
            still, result = self._finish(run_dir, lambda: run.advance(state, deadline=time.time() + window))
            if still is None:
                return result
            state = still
        self._defer(run, backend, state, run_dir, context)
        return None

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        from airflow.sdk.exceptions import AirflowFailException

        from sciops.arrays import ArrayState, accounting_from_dict
        from sciops.errors import SchedulerQueryError
        from sciops.pipeline import phase_end

        run, backend, saved, run_dir = self._array_run(context)
        state = ArrayState.from_dict(saved or {"job_id": event["job_id"], "attempt": 1,
                                               "task_ids": list(range(1, run.n_tasks + 1)), "submitted_at": 0})
        store = context.get("task_state_store")
        if event.get("spent_usd") is not None and store is not None:
            store.set(SPEND_KEY, event["spent_usd"])  # carried into the next attempt's watch
        if event.get("status") == "budget_exceeded":
            from sciops.pipeline import BUDGET_EXCEEDED, write_json

            write_json(run_dir / "work" / "budget.json", event)
            exc = RuntimeError(f"{BUDGET_EXCEEDED}: {event['spent_usd']:.4f} USD spent of the {event['budget_usd']:.4f} "
                               f"USD budget; {run.scheduler.name} job {event['job_id']} cancelled "
                               f"{event['cancelled_at'] - event['crossed_at']:.1f} s after the cap was reached; "
                               "finished images are kept")
            phase_end(run_dir, PHASE, exc)
            raise AirflowFailException(str(exc))
        if event.get("status") != "ended":
            # A watch that failed (cluster unreachable too long): the job may still run.
            # Raising lets Airflow retry this task, which re-attaches to the same job.
            exc = SchedulerQueryError(f"lost track of {run.scheduler.name} job {state.job_id}: "
                                      f"{event.get('message')}")
            phase_end(run_dir, PHASE, exc)
            raise exc
        acct = {int(t): accounting_from_dict(int(t), a) for t, a in event["accounting"].items()}

        def conclude():
            nxt = run.conclude(state, acct)
            if nxt is None:
                return None, run.result(state)
            window = self._worker_wait()  # a resubmission that ends quickly ends here too
            return run.advance(nxt, deadline=time.time() + window) if window > 0 else (nxt, None)

        still, result = self._finish(run_dir, conclude)
        if still is None:
            return result
        self._defer(run, backend, still, run_dir, context)
        return None

    def _finish(self, run_dir: Path, step):
        """Run ``step`` (→ ``(state still running, None)`` or ``(None, result)``), ending the phase with it."""
        from airflow.sdk.exceptions import AirflowFailException

        from sciops.errors import JobFailedError
        from sciops.pipeline import phase_end

        try:
            still, result = step()
        except JobFailedError as exc:
            phase_end(run_dir, PHASE, exc)
            # Every attempt is spent (or someone deleted the job): an Airflow retry would only
            # re-attach to the same ended job and fail again.
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            phase_end(run_dir, PHASE, exc)
            raise
        if still is None:
            phase_end(run_dir, PHASE)
        return still, result

    def _worker_wait(self) -> float:
        return float(os.environ.get("SCIOPS_WORKER_WAIT_SECONDS", self.worker_wait_seconds))

    def _defer(self, run, backend, state, run_dir: Path, context: Any) -> None:
        from sciops.triggers.array import ArrayJobTrigger

        trigger = ArrayJobTrigger(
            job_id=state.job_id, task_ids=state.task_ids, scheduler=run.scheduler.name,
            scheduler_options=_scheduler_options(run.m), ssh_conn_id=run.m["backend_options"].get("ssh_conn_id"),
            poll_seconds=self._poll(), n_images=run.n_images, work_dir=str(run_dir / "work"),
            started_at=state.submitted_at, attempt=state.attempt, ssh_host=run.m["backend_options"].get("host"),
            budget=self._budget(run.m, context, state), deferred_at=time.time(),
            ssh_host_key=run.m["backend_options"].get("host_key"))
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(days=7))


    @staticmethod
    def _budget(manifest: dict[str, Any], context: Any, state) -> dict[str, float] | None:
        budget = manifest.get("budget") or {}
        if not budget.get("budget_usd"):
            return None
        store = context.get("task_state_store")
        spent = store.get(SPEND_KEY) if store is not None else None
        # the spend since this attempt's submission is not counted yet (the worker watched it)
        return {**budget, "spent_usd": float(spent if spent is not None else budget.get("spent_usd", 0.0)),
                "since": state.submitted_at or time.time()}


def _scheduler_options(manifest: dict[str, Any]) -> dict[str, Any]:
    opts = manifest["backend_options"]
    if manifest["backend"] == "local":
        return {"spool": str(Path(manifest["work_dir"]) / "jobs"), "slots": opts.get("slots") or os.cpu_count()}
    return dict(opts.get("scheduler_options") or {})
