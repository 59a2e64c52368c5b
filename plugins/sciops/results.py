"""Collation: per-image outputs → ``results.csv`` (+ parquet), ``summary.csv``, ``failures.csv``.

Every image of the manifest ends in exactly one of ``summary.csv`` (processed) or
``failures.csv`` (with the reason): nothing is lost silently.
"""
from __future__ import annotations

import json
import re
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sciops import runner_module
from sciops.errors import SciOpsError

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ["image", "task", "attempt", "status", "error"]


@dataclass
class Collated:
    images: int
    ok: int
    failed: int
    result_rows: int
    files: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_table(path: Path) -> pd.DataFrame:
    """An ImageJ CSV (its unnamed row-number column dropped); empty when the file has no rows."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, FileNotFoundError):
        return pd.DataFrame()
    drop = [c for c in df.columns if not str(c).strip() or str(c).startswith("Unnamed:")]
    return df.drop(columns=drop)


#: What batch systems write into a killed task's stderr, worth repeating in failures.csv.
SCHEDULER_MESSAGES = re.compile(r"(exceeded memory limit|DUE TO TIME LIMIT|CANCELLED AT \S+ DUE TO \S+|"
                                r"oom-kill|Out Of Memory)", re.IGNORECASE)


def scheduler_says(log_dir: Path, job_id: str, task: int, task_ids: list[int]) -> str:
    """The batch system's own words about a task, from its stderr file (Slurm ``%x.%A.%a.err``,
    SGE ``<name>.e<job>.<index>``, localq ``<name>.<job>.<task>.err``)."""
    index = task_ids.index(task) + 1 if task in task_ids else task
    candidates = [*log_dir.glob(f"*.{job_id}.{task}.err"), *log_dir.glob(f"*.e{job_id}.{index}")]
    for path in candidates:
        try:
            m = SCHEDULER_MESSAGES.search(path.read_text(errors="replace")[-20000:])
        except OSError:
            continue
        if m:
            return m.group(1)
    return ""


def task_outcomes(work: Path) -> dict[int, str]:
    """Why a task never finished: the scheduler's accounting (``work/attempts.json``) plus
    the runner's own words from its last attempt summary, when it wrote one."""
    path = work / "attempts.json"
    if not path.exists():
        return {}
    reasons: dict[int, str] = {}
    for attempt in json.loads(path.read_text()):
        for t, acct in attempt.get("accounting", {}).items():
            if acct["state"] != "done":
                said = acct.get("reason") or ""
                state = "" if said.startswith(acct["state"]) else acct["state"] + " "
                reason = f"task {t} attempt {attempt['attempt']}: {state}{said}".strip()
                summary = work / "status" / f"task-{int(t):04d}.attempt-{attempt['attempt']}.json"
                if summary.exists():
                    said = json.loads(summary.read_text()).get("error")
                    if said:
                        reason += f"; runner: {said}"
                said = scheduler_says(work.parent / "logs", attempt["job_id"], int(t), attempt["tasks"])
                if said:
                    reason += f"; scheduler: {said}"
                reasons[int(t)] = reason
    return reasons


def collate(run_dir: Path, manifest: dict[str, Any]) -> Collated:
    work = Path(run_dir) / "work"   # as seen from here (the manifest holds the cluster's paths)
    st = runner_module()
    statuses: dict[str, dict] = {}
    in_flight: set[str] = set()   # begun by an attempt that died under it (see sciops_task)
    for i in range(1, len(manifest["chunks"]) + 1):
        path = st.status_path(str(work), i)
        statuses.update(st.read_statuses(path))
        in_flight.update(st.deaths_under(path))
    reasons = task_outcomes(work)
    summary_rows, failures, tables = [], [], []
    for task, chunk in enumerate(manifest["chunks"], start=1):
        for image in chunk:
            rec = statuses.get(image)
            if rec is None:
                why = reasons.get(task, f"task {task} never reported this image")
                # only the image that was running is blamed; the chunk's others were never reached
                error = (f"in flight when the task died: {why}" if image in in_flight else
                         f"never started: {why}")
                failures.append({"image": image, "task": task, "attempt": None, "status": "not_run",
                                 "error": error})
                continue
            if rec["status"] != "ok":
                failures.append({k: rec.get(k) for k in FAILURE_COLUMNS})
                continue
            outdir = Path(st.image_output_dir(str(work), image))
            table = read_table(outdir / "results.csv")
            row = {"image": image, "task": rec["task"], "attempt": rec["attempt"], "seconds": rec["seconds"],
                   "n_results": len(table)}
            macro_summary = read_table(outdir / "summary.csv")
            if len(macro_summary):
                row.update({k: v for k, v in macro_summary.iloc[0].to_dict().items() if k not in row})
            summary_rows.append(row)
            if len(table):
                table.insert(0, "attempt", rec["attempt"])
                table.insert(0, "task", rec["task"])
                table.insert(0, "image", image)
                tables.append(table)
    results = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image", "task", "attempt"])
    summary = pd.DataFrame(summary_rows, columns=None if summary_rows else
                           ["image", "task", "attempt", "seconds", "n_results"])
    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    files = {
        "results_csv": run_dir / "results.csv",
        "results_parquet": run_dir / "results.parquet",
        "summary_csv": run_dir / "summary.csv",
        "failures_csv": run_dir / "failures.csv",
    }
    results.to_csv(files["results_csv"], index=False)
    results.to_parquet(files["results_parquet"], index=False)
    summary.to_csv(files["summary_csv"], index=False)
    failed.to_csv(files["failures_csv"], index=False)
    n_images = sum(len(c) for c in manifest["chunks"])
    if len(summary) + len(failed) != n_images:
        raise SciOpsError(f"collation accounted for {len(summary) + len(failed)} of {n_images} images")
    log.info("collated %d images: %d ok, %d failed, %d result rows", n_images, len(summary), len(failed), len(results))
    return Collated(n_images, len(summary), len(failed), len(results), {k: str(v) for k, v in files.items()})
