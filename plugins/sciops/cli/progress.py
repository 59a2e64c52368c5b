"""A run's progress while it goes: phase, images done and failed, ETA, spend (``sciops run --wait``).

Read from the run folder (its phase records, plan.json and the task runners' count files),
where this process can see it: the storage root's folder for a folder root, the work root for
an S3 one (the same machine or volume as the workers). Elsewhere (a cluster's own disk) it
says only what Airflow says: the state.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from sciops.accounting.costs import rate_cost
from sciops.arrays.workdir import chunk_counts
from sciops.run.project import safe_run_id
from sciops.run.runinfo import storage_for
from sciops.storage.root import work_root
from sciops_node import contract
from sciops_node.contract import Manifest


def run_folder(conf: dict[str, Any], airflow_run_id: str) -> Path | None:
    project = conf.get("project")
    if not isinstance(project, str):
        return None
    try:
        storage = storage_for(conf)
    except Exception:  # noqa: BLE001 - a run refused for its storage root has no folder
        return None
    base = storage.root if storage.is_local else work_root()
    folder = Path(base, project, "output", safe_run_id(airflow_run_id))
    return folder if folder.is_dir() else None


def input_images(conf: dict[str, Any]) -> int | None:
    """Before the plan: how many images under the project's ``input/`` match its ``file_pattern`` (the run's,
    else project.yaml's, else the default), so ``--wait`` shows a total from the start. A folder root only
    (one walk); on S3, or when anything is amiss, None: the plan's count comes soon enough."""
    from sciops.run.config import DEFAULTS
    from sciops.run.project import Project, match_images

    project = conf.get("project")
    try:
        storage = storage_for(conf)
        if not isinstance(project, str) or not storage.is_local:
            return None
        root = storage.path(project)
        pattern = conf.get("file_pattern") or Project(project, root).defaults().get("file_pattern") \
            or DEFAULTS["file_pattern"]
        inputs = root / "input"
        if inputs.is_symlink():
            return None
        rels = []
        for top, _dirs, files in os.walk(inputs):   # links to folders are not followed
            rels += [os.path.relpath(os.path.join(top, f), inputs) for f in files]
            if len(rels) > 1_000_000:   # a guess only: never a long walk per poll
                return None
        return len(match_images(rels, str(pattern).split(","))) or None
    except Exception:  # noqa: BLE001 - a guess for the progress bar; validate says what is wrong
        return None


def run_progress(conf: dict[str, Any], airflow_run_id: str) -> dict[str, Any]:
    """``{phase, images, done, ok, failed, eta_s, spent_usd}``, as far as the run folder shows them; before the
    plan, ``images`` is the count of matching input images (:func:`input_images`) and ``done`` 0."""
    folder = run_folder(conf, airflow_run_id)
    if folder is None:
        early = input_images(conf)
        return {"images": early, "done": 0} if early else {}
    work = folder / "work"
    out: dict[str, Any] = {}
    phases = []
    for path in work.glob("phases/*.json"):
        try:
            phases.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    running = [p for p in phases if p.get("status") == "running"]
    if running or phases:
        out["phase"] = max(running or phases, key=lambda p: p.get("start") or 0)["phase"]
    try:   # plan.json: the plan's counts; the manifest (its image lists) only for a run planned before it
        planned = json.loads((work / "plan.json").read_text())
    except (OSError, ValueError):
        try:
            manifest = Manifest.load(contract.manifest_path(str(work)))
        except (OSError, ValueError):
            early = input_images(conf)
            return {**out, "images": early, "done": 0} if early else out
        planned = {"images": sum(len(c) for c in manifest.chunks), "budget": manifest.budget}
    out["images"] = planned["images"]
    counts = chunk_counts(work).values()
    out["ok"] = sum(c["ok"] for c in counts)
    out["done"] = sum(c["done"] for c in counts)
    out["failed"] = out["done"] - out["ok"]
    array = next((p for p in phases if p.get("phase") == "run_array"), None)
    if array and out["done"] and out["done"] < out["images"]:
        elapsed = (array.get("end") or time.time()) - array["start"]
        out["eta_s"] = round(elapsed / out["done"] * (out["images"] - out["done"]), 1)
    rate = (planned.get("budget") or {}).get("task_rate_usd_per_hour") or conf.get("hourly_rate_usd")
    if rate:
        out["spent_usd"] = rate_cost(work, float(rate))["total_usd"]
    return out
