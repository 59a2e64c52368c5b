"""What a run's work dir says while its array runs: read from the task runners' own files.

Images done and per-task counts (a progress poll), the runners' exit files (completion without
waiting for the scheduler's accounting), the attempt history's last accounting and lost nodes, and
the progress line the watch logs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sciops.arrays.schedulers.base import JobState, TaskAccounting
from sciops_node import contract


def latest_accounting(history: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Every task's accounting in the last attempt that ran it."""
    out: dict[int, dict[str, Any]] = {}
    for entry in history:
        for t, a in entry["accounting"].items():
            out[int(t)] = a
    return out


def node_losses(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task attempts whose node was lost: ``{task, attempt, job_id, reason, seconds}``."""
    return [{"task": int(t), "attempt": entry["attempt"], "job_id": entry["job_id"], "reason": a.get("reason", ""),
             "seconds": a.get("seconds")}
            for entry in history for t, a in entry["accounting"].items() if a["state"] == JobState.LOST.value]


def images_done(work_dir: str | Path) -> int | None:
    """Images with a final status so far, or None when the work dir is not readable from here."""
    if not Path(work_dir).is_dir():
        return None
    return sum(c["done"] for c in chunk_counts(work_dir).values())


def chunk_counts(work_dir: str | Path) -> dict[int, dict[str, int]]:
    """Per task ``{done, ok}`` from the runners' count files (one small file per task, not every
    status line); a task with status lines but no count file (an older runner) is counted from them."""
    out: dict[int, dict[str, int]] = {}
    for path in Path(contract.status_dir(str(work_dir))).glob(contract.STATUS_GLOB):
        task = int(path.name[5:9])
        try:
            count = json.loads(Path(contract.count_path(str(work_dir), task)).read_text())
            out[task] = {"done": int(count["done"]), "ok": int(count["ok"])}
        except (OSError, ValueError, KeyError):
            statuses = contract.read_statuses(str(path))
            out[task] = {"done": len(statuses), "ok": sum(r.get("status") == "ok" for r in statuses.values())}
    return out


def runner_summary(work_dir: str | Path, task: int, attempt: int) -> dict[str, Any] | None:
    """The runner's attempt summary (written at its start, then at its end), or None."""
    try:
        return json.loads(Path(contract.attempt_summary_path(str(work_dir), task, attempt)).read_text())
    except (OSError, ValueError):
        return None


def exited(work_dir: str | Path, task_ids: tuple[int, ...] | list[int], attempt: int) -> bool:
    """Have all of ``task_ids`` written their exit (any code) in ``attempt``'s summary? (A last-wave wake.)"""
    return all((runner_summary(work_dir, t, attempt) or {}).get("exit") is not None for t in task_ids)


def exit_file_accounting(work_dir: str | Path | None, task_ids: list[int],
                         attempt: int) -> dict[int, TaskAccounting] | None:
    """Completion from the runners' own exit files, when every task of the attempt wrote exit 0.

    Each task runner writes ``status/task-NNNN.attempt-K.json`` as its very last act. When
    all of them say exit 0 the attempt is done without waiting for the scheduler's
    accounting (which lags: Grid Engine flushes every 15 s by default). Anything else
    (a missing file, a non-zero exit, a work dir not readable from here) returns None:
    accounting then decides, and explains the failure.
    """
    if work_dir is None:
        return None
    out = {}
    for t in task_ids:
        summary = runner_summary(work_dir, t, attempt)
        if summary is None or summary.get("exit") != 0:
            return None
        out[t] = TaskAccounting(t, JobState.DONE, 0, round(summary["end"] - summary["start"], 3), None, "")
    return out


def progress_line(states: dict[int, JobState], done: int | None, n_images: int, started: float) -> str:
    counts = {s: 0 for s in JobState}
    for s in states.values():
        counts[s] += 1
    elapsed = time.time() - started
    eta = f"{elapsed / done * (n_images - done):.0f}s" if done else "?"
    images = f"images {done}/{n_images}" if done is not None else f"images ?/{n_images}"
    return (f"tasks: {counts[JobState.DONE]} done, {counts[JobState.RUNNING]} running, "
            f"{counts[JobState.UNKNOWN]} ended (awaiting accounting), "
            f"{counts[JobState.PENDING] + counts[JobState.HELD]} waiting, "
            f"{counts[JobState.FAILED] + counts[JobState.CANCELLED] + counts[JobState.ERROR] + counts[JobState.LOST]}"
            f" failed{f' ({lost} with a lost node)' if (lost := counts[JobState.LOST]) else ''} "
            f"of {len(states)}; {images}; elapsed {elapsed:.0f}s; ETA {eta}")
