"""Triggers: the waits that happen in Airflow's triggerer, not in a worker.

Airflow 3.3's scheduler race after a deferral
-----------------------------------------------
When a task defers, its worker process exits and the executor later reports that exit
as "success". If the trigger fires, and the scheduler queues the resumed task, *before*
the scheduler has processed that stale report, the report is taken for the resumed try
and the task is failed as "killed externally" (apache/airflow#67287 for ``queued``,
#72716 for ``running``; only the ``scheduled`` case is guarded in 3.3.2). Two rules keep
SciOps out of it:

1. ``run_array`` watches from the worker first (``SCIOPS_WORKER_WAIT_SECONDS``, 30 s): an
   array that ends within that window never defers at all, so a fast run has no deferral
   to race. (The cluster operators do not: a cluster takes minutes, and rule 2 covers them.)
2. A trigger never sends its event sooner than ``SCIOPS_MIN_DEFER_SECONDS`` (15 s)
   after the task deferred (:func:`hold`). The scheduler handles an executor's report
   within a loop or two (about a second each when idle); 15 s leaves a busy scheduler
   room, and costs at most that much on a wait that already outlasted the worker window.
"""
from __future__ import annotations

import asyncio
import time

from sciops.settings import setting


def min_defer_seconds() -> float:
    """Seconds a trigger holds its event after the deferral (see the module docstring)."""
    return setting("SCIOPS_MIN_DEFER_SECONDS")


async def hold(deferred_at: float, minimum: float) -> None:
    """Sleep until ``minimum`` seconds have passed since ``deferred_at`` (no-op once they have)."""
    wait = deferred_at + minimum - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
