"""Wait for a ParallelCluster to be ready (or gone) in the triggerer, without holding a worker."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

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
    """

    def __init__(self, name: str, region: str, want: str, aws_conn_id: str | None = None,
                 pcluster: str | None = None, poll_seconds: float | None = None, max_errors: int = 10):
        super().__init__()
        self.name, self.region, self.want = name, region, want
        self.aws_conn_id, self.pcluster = aws_conn_id, pcluster
        self.poll_seconds = poll_seconds if poll_seconds is not None else float(
            os.environ.get("SCIOPS_PCLUSTER_POLL_SECONDS", "30"))
        self.max_errors = max_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("sciops.triggers.cluster.PClusterStateTrigger", {
            "name": self.name, "region": self.region, "want": self.want, "aws_conn_id": self.aws_conn_id,
            "pcluster": self.pcluster, "poll_seconds": self.poll_seconds, "max_errors": self.max_errors})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from sciops.clusters import parallelcluster as pc

        cli = pc.PCluster(self.region, self.pcluster, env=pc.aws_env(self.aws_conn_id))
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
                yield TriggerEvent({**state, "name": self.name, "polls": polls, "ok": done})
                return
            await asyncio.sleep(self.poll_seconds)
