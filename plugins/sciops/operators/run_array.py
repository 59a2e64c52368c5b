"""``FijiArrayOperator``: run a planned project as one array job, resubmitting failed chunks.

One deferrable sequence (STYLE 2): submit → save ``{job_id, attempt, task_ids}`` in
``task_state_store`` → watch from the worker for ``worker_wait_seconds`` (a short array
ends there, with no deferral to race: see :mod:`sciops.triggers`) → defer to :class:`~sciops.triggers.array.ArrayJobTrigger` →
``execute_complete`` settles the attempt (:meth:`sciops.arrays.run.ArrayRun.settle`) and either
resubmits the failed chunks and defers again, or ends (with a failures list, or raising
with the job ids and reasons). A retried or restarted task finds the saved job and
re-attaches: it never submits twice.

Both waits, the worker's and the triggerer's, drive the same pure watch
(:mod:`sciops.arrays.watch`): the budget cap and the timeout hold in both. ``timeout`` is the one
limit of the whole array phase, counted from the first submission and kept in
``task_state_store`` across retries; deferrals get the time left (Airflow does not carry
``execution_timeout`` across a deferral). ``on_kill`` (the task killed while it watches
from the worker) cancels the job: an array left running costs money.

What is kept in ``task_state_store`` (job, spend, deadline) belongs to one plan: the store
survives a clear of the task, so a run whose ``plan`` ran again (a new ``plan_id``) starts
afresh instead of re-attaching to the jobs, spend and deadline of its earlier life.
"""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from sciops.settings import setting
from sciops_node.contract import Manifest

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.

STATE_KEY = "sciops_array"
SPEND_KEY = "sciops_spend"
DEADLINE_KEY = "sciops_deadline"
PLAN_KEY = "sciops_plan"
PHASE = "run_array"
#: Airflow's own deferral timeout is a safety net past the watch's deadline (a trigger that died).
DEFER_MARGIN = timedelta(hours=1)


class FijiArrayOperator(BaseOperator):
    """
    :param manifest_path: the run manifest written by ``plan`` (templated).
    :param poll_seconds: seconds between status polls (``SCIOPS_POLL_SECONDS`` overrides).
    :param deferrable: wait in the triggerer (True) or poll from the worker (False).
    :param worker_wait_seconds: with ``deferrable``, watch this long from the worker before
        deferring (``SCIOPS_WORKER_WAIT_SECONDS`` overrides; 0 defers at once): a short array
        ends here without a deferral (see ``sciops.triggers`` for why that matters).
    :param timeout: the longest the array phase may take, from the first submission, deferrals
        and resubmissions included: then the job is cancelled and the task fails.
    """

    template_fields = ("manifest_path",)
    ui_color = "#b7d7e8"

    def __init__(self, *, manifest_path: str, poll_seconds: float = 5.0, deferrable: bool = True,
                 worker_wait_seconds: float = 30.0, timeout: timedelta = timedelta(hours=48), **kwargs: Any):
        super().__init__(**kwargs)
        self.worker_wait_seconds = worker_wait_seconds
        self.manifest_path = manifest_path
        self.poll_seconds = poll_seconds
        self.deferrable = deferrable
        self.timeout = timeout
        self._watching = None   # (run, state) while this worker watches: what on_kill cancels

    # -- the pieces, made in execute (never in __init__) --------------------------------
    def _array_run(self, context: Any):
        from sciops.arrays.run import ArrayRun
        from sciops.clusters import get_backend
        from sciops.run.project import read_manifest

        store = context.get("task_state_store")
        if store is None:
            # Without it a retried task cannot find its job id: it would submit a second array.
            raise RuntimeError("run_array needs Airflow's task_state_store (Airflow 3.3 or later) to keep the job "
                               "id across retries; refusing to submit without it")
        manifest = read_manifest(self.manifest_path)
        backend = get_backend(manifest.backend, **manifest.backend_options)
        plan_id = manifest.plan_id
        kept = store.get(PLAN_KEY)
        if kept != plan_id:   # a new plan (the run was cleared and planned again): nothing of the old one holds
            for key in (STATE_KEY, SPEND_KEY, DEADLINE_KEY):
                store.delete(key)
            store.set(PLAN_KEY, plan_id)
        deadline = store.get(DEADLINE_KEY)
        if deadline is None:
            deadline = time.time() + self.timeout.total_seconds()
            store.set(DEADLINE_KEY, deadline)
        work = Path(self.manifest_path).parent
        ti = context.get("ti")
        # A retry may follow a try that submitted and died before saving the job id: look first.
        retry = bool(ti is not None and (getattr(ti, "try_number", 1) or 1) > 1)
        run = ArrayRun(backend.scheduler(str(work)), backend.runner(), manifest, lambda s: store.set(STATE_KEY, s),
                       self._poll(), python=backend.python, local_work_dir=str(work), retry=retry,
                       budget=self._budget(manifest, store), deadline=float(deadline))
        return run, backend, store.get(STATE_KEY), work.parent, store

    def _poll(self) -> float:
        return float(setting("SCIOPS_POLL_SECONDS", self.poll_seconds))

    @staticmethod
    def _budget(manifest: Manifest, store) -> dict[str, float] | None:
        budget = manifest.budget or {}
        if not budget.get("budget_usd"):
            return None
        spent = store.get(SPEND_KEY)
        return {**budget, "spent_usd": float(spent if spent is not None else budget.get("spent_usd", 0.0))}

    # -- Airflow ---------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any] | None:
        from sciops.arrays.run import ArrayState
        from sciops.phases import phase_start

        run, backend, saved, run_dir, store = self._array_run(context)
        state = ArrayState.from_dict(saved) if saved else None
        phase_start(run_dir, PHASE, keep_start=state is not None)
        if state is None:
            state = run.start()
        else:
            self.log.info("re-attaching to %s job %s (attempt %d)", run.scheduler.name, state.job_id, state.attempt)
        if not self.deferrable:
            return self._finish(run, run_dir, store, lambda: run.advance(state))[1]
        # Watch the first seconds from here: an array that ends in them never defers, so it
        # cannot meet Airflow's stale-event race after a deferral (see sciops.triggers).
        window = self._worker_wait()
        if window > 0:
            still, result = self._finish(run, run_dir, store, lambda: run.advance(state, deadline=time.time() + window))
            if still is None:
                return result
            state = still
        self._defer(run, backend, state, run_dir)
        return None

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        from sciops.arrays.run import ArrayState

        run, backend, saved, run_dir, store = self._array_run(context)
        state = ArrayState.from_dict(saved or {"job_id": event["job_id"], "attempt": 1,
                                               "task_ids": list(range(1, run.n_tasks + 1)), "submitted_at": 0})

        def settle():
            nxt = run.settle(state, event)
            if nxt is None:
                return None, run.result(state)
            window = self._worker_wait()  # a resubmission that ends quickly ends here too
            return run.advance(nxt, deadline=time.time() + window) if window > 0 else (nxt, None)

        still, result = self._finish(run, run_dir, store, settle)
        if still is None:
            return result
        self._defer(run, backend, still, run_dir)
        return None

    def _finish(self, run, run_dir: Path, store, step):
        """Run ``step`` (→ ``(state still running, None)`` or ``(None, result)``), ending the phase with it."""
        from airflow.sdk.exceptions import AirflowFailException

        from sciops.errors import JobFailedError
        from sciops.phases import phase_end

        self._watching = run
        try:
            still, result = step()
        except JobFailedError as exc:
            phase_end(run_dir, PHASE, exc)
            # Every attempt is spent, the budget or the timeout passed (the job was cancelled), or
            # someone deleted the job: an Airflow retry would only re-attach to an ended job.
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            phase_end(run_dir, PHASE, exc)
            raise
        finally:
            self._watching = None
            if run.budget is not None:
                store.set(SPEND_KEY, run.budget["spent_usd"])   # carried into the next wait, here or deferred
        if still is None:
            phase_end(run_dir, PHASE)
        return still, result

    def on_kill(self) -> None:
        """The task is killed while it watches from the worker: cancel the job it watches."""
        run = self._watching
        state = run.current if run is not None else None
        if state is None:
            return
        self.log.warning("task killed: cancelling %s job %s", run.scheduler.name, state.job_id)
        try:
            run.scheduler.cancel(run.runner, state.job_id)
        except Exception:  # noqa: BLE001 - the kill goes on; the sweep or a person cancels it
            self.log.exception("could not cancel %s job %s", run.scheduler.name, state.job_id)

    def _worker_wait(self) -> float:
        return float(setting("SCIOPS_WORKER_WAIT_SECONDS", self.worker_wait_seconds))

    def _defer(self, run, backend, state, run_dir: Path) -> None:
        from sciops.triggers.array import ArrayJobTrigger

        trigger = ArrayJobTrigger(
            job_id=state.job_id, task_ids=state.task_ids, scheduler=run.scheduler.name,
            # the arguments that made run.scheduler, as the backend (made from the manifest) gives them
            scheduler_options=backend.scheduler_args(run.manifest.work_dir),
            ssh_conn_id=run.manifest.backend_options.get("ssh_conn_id"),
            poll_seconds=self._poll(), n_images=run.n_images, work_dir=str(run_dir / "work"),
            started_at=state.submitted_at, attempt=state.attempt, ssh_host=run.manifest.backend_options.get("host"),
            # the worker counted the spend up to now
            budget={**run.budget, "since": time.time()} if run.budget else None, deferred_at=time.time(),
            ssh_host_key=run.manifest.backend_options.get("host_key"), deadline=run.deadline)
        left = max(run.deadline - time.time(), 0.0)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=left) + DEFER_MARGIN)
