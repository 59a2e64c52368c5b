"""Wait for a ParallelCluster to be ready (or gone) in the triggerer, without holding a worker."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sciops.settings import setting

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.

log = logging.getLogger(__name__)


class PClusterStateTrigger(BaseTrigger):
    """Polls ``pcluster describe-cluster`` until the cluster is ``want`` (ready / gone) or failed.

    :param name: cluster name.
    :param region: AWS region.
    :param want: ``ready`` (after create) or ``gone`` (after delete).
    :param aws_conn_id: Airflow AWS connection whose credentials pcluster gets (in its environment).
    :param pcluster: path of the pcluster CLI (its own venv); None = the default.
    :param poll_seconds: seconds between polls.
    :param max_errors: consecutive unreadable answers tolerated (throttling, network) before giving up.
    :param deferred_at: when the task deferred; the event waits ``min_defer_seconds`` after it
        (Airflow's stale-executor-event race: see ``sciops.triggers``).

    Exactly one event, ``{..., "ok": bool}``; nothing raises out of ``run()`` (an unexpected
    error is an event with ``ok: false`` and the message).
    """

    def __init__(self, name: str, region: str, want: str, aws_conn_id: str | None = None,
                 pcluster: str | None = None, poll_seconds: float | None = None, max_errors: int = 10,
                 deferred_at: float | None = None, min_defer_seconds: float | None = None):
        super().__init__()
        import time

        from sciops.triggers import min_defer_seconds as default_hold

        self.name, self.region, self.want = name, region, want
        self.aws_conn_id, self.pcluster = aws_conn_id, pcluster
        self.poll_seconds = poll_seconds if poll_seconds is not None else setting("SCIOPS_PCLUSTER_POLL_SECONDS")
        self.max_errors = max_errors
        self.deferred_at = deferred_at or time.time()
        self.min_defer_seconds = default_hold() if min_defer_seconds is None else min_defer_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("sciops.triggers.cluster.PClusterStateTrigger", {
            "name": self.name, "region": self.region, "want": self.want, "aws_conn_id": self.aws_conn_id,
            "pcluster": self.pcluster, "poll_seconds": self.poll_seconds, "max_errors": self.max_errors,
            "deferred_at": self.deferred_at, "min_defer_seconds": self.min_defer_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from sciops.triggers import hold

        try:
            event = await self._watch()
        except Exception as exc:  # noqa: BLE001 - a trigger never raises: report and end
            self.log.exception("PClusterStateTrigger failed")
            event = {"name": self.name, "state": None, "status": None, "ok": False,
                     "message": f"trigger error: {type(exc).__name__}: {exc}"}
        await hold(self.deferred_at, self.min_defer_seconds)
        yield TriggerEvent(event)

    async def _watch(self) -> dict[str, Any]:
        from sciops.clusters import parallelcluster as pc

        # the credentials lookup is blocking (a connection, maybe an STS call): not in the event loop
        env = await asyncio.to_thread(pc.aws_env, self.aws_conn_id)
        cli = pc.PCluster(self.region, self.pcluster, env=env)
        errors = polls = 0
        last = None
        while True:
            polls += 1
            state = await cli.describe_async(self.name)
            if state["status"] != last:
                self.log.info("cluster %s: %s", self.name, state["status"] or state["state"] or state["message"])
                last = state["status"]
            done = state["state"] == self.want
            failed = state["state"] == pc.FAILED or (self.want == pc.READY and state["state"] in (pc.GONE, pc.DELETING))
            if state["state"] is None:
                errors += 1
                failed = errors >= self.max_errors
            else:
                errors = 0
            if done or failed:
                return {**state, "name": self.name, "polls": polls, "ok": done}
            await asyncio.sleep(self.poll_seconds)
