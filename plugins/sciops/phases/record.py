"""``record`` and ``outcome``: what happened to the run, written down, then the verdict.

``record`` writes ``run.json`` and ``report.html`` for every run that got past the project
check, failed or not, puts its ledger row and tells Slack; ``outcome`` (the DAG's last
task) fails the DAG run when a phase failed.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from sciops.accounting import ledger
from sciops.accounting.costs import task_intervals
from sciops.arrays.workdir import node_losses
from sciops.errors import SciOpsError
from sciops.phases import REFUSED, trigger_label
from sciops.reporting import notify, report
from sciops.run import processed
from sciops.run.project import write_json
from sciops.run.runinfo import RunInfo
from sciops_node import contract

log = logging.getLogger(__name__)
BUDGET_EXCEEDED = "budget exceeded"
def array_timing(attempts: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    """Per submission: queue wait (submit → first task start) and compute (first start → last end)."""
    tasks = task_intervals(work)
    out = []
    for n, att in enumerate(attempts, 1):
        mine = [t for t in tasks if t["attempt"] == n]
        first = min((t["start"] for t in mine), default=None)
        last = max((t["end"] for t in mine), default=None)
        out.append({"attempt": n, "job_id": att["job_id"], "tasks": len(att.get("task_ids") or mine),
                    "queue_wait_s": round(first - att["submitted_at"], 3) if first and att.get("submitted_at") else None,
                    "compute_s": round(last - first, 3) if first and last else None, "resubmit": n > 1})
    return out


def _attempts_say(work: Path, key: str) -> str | None:
    """``key`` of the first task attempt that ran ImageJ (the ImageJ or Bio-Formats version the nodes ran)."""
    for path in sorted(Path(contract.status_dir(str(work))).glob(contract.ATTEMPT_SUMMARY_GLOB)):
        doc = json.loads(path.read_text())
        if doc.get("imagej_version"):
            return doc.get(key)
    return None


def record(info: RunInfo | dict[str, Any] | None, collated: dict[str, Any] | None = None, dag_id: str | None = None,
           trigger: str | None = None, synced_up: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``run.json`` for every run that got past the project check, failed or not.

    On S3 it is also put in ``<project>/output/<run_id>/``, and copied to the LAN folder
    when results are synced down. Records failed runs as well as good ones and does not
    fail for them: :func:`outcome` (the DAG's last task) does.
    """
    if not info:
        raise SciOpsError("validate did not pass: nothing was run and there is no run folder to record in "
                          "(see the sync_up and validate tasks' logs for the field to fix)")
    info = RunInfo.of(info)
    cfg = info.config
    run_dir = Path(info.run_dir)
    work = run_dir / "work"
    phases = {"sync_up": synced_up} if synced_up else {}
    for path in sorted(work.glob("phases/*.json")):
        rec = json.loads(path.read_text())
        phases[rec["phase"]] = rec
    for rec in phases.values():
        if rec.get("end"):
            rec["seconds"] = round(rec["end"] - rec["start"], 3)
    failed_phases = [name for name, rec in phases.items() if rec["status"] != "success"]
    collated = collated or {}
    attempts = json.loads((work / "attempts.json").read_text()) if (work / "attempts.json").exists() else []
    cpu_seconds = sum(a.get("seconds") or 0 for att in attempts for a in att["accounting"].values())
    starts = [p["start"] for p in phases.values()]
    ends = [p.get("end") or time.time() for p in phases.values()]
    storage = info.storage()
    status = "failed" if failed_phases else "success"
    if any(BUDGET_EXCEEDED in (phases[p].get("error") or "") for p in failed_phases):
        status = BUDGET_EXCEEDED
    elif failed_phases == ["validate"]:  # the smoke run said no: nothing was spent
        status = REFUSED
    with info.backend() as backend:
        cost = backend.cost(info, work)
    ok = collated.get("ok")
    params = cfg.model_dump(mode="json")
    doc = {
        "run_id": info.run_id, "airflow_run_id": info.airflow_run_id, "dag_id": dag_id,
        "trigger": trigger_label(trigger, info.airflow_run_id), "project": info.project, "params": params,
        "storage_root": storage.url, "run_dir": str(run_dir),
        "macro": {"name": cfg.macro, "sha256": info.macro_sha256},
        "imagej_version": _attempts_say(work, "imagej_version") or info.imagej_version,
        "bioformats_version": _attempts_say(work, "bioformats_version") or info.launcher.get("bioformats_version"),
        "launcher": info.launcher.get("kind"),
        "status": status, "failed_phases": failed_phases,
        "reason": next((phases[p].get("error") for p in failed_phases if phases[p].get("error")), None),
        "param_sources": info.config_sources,
        "started_at": min(starts) if starts else None, "ended_at": max(ends) if ends else None,
        "phases": phases,
        "images": {"total": info.images, "ok": ok, "failed": collated.get("failed")},
        "array": {"attempts": len(attempts), "job_ids": [a["job_id"] for a in attempts],
                  "node_losses": len(node_losses(attempts)),
                  "task_seconds": round(cpu_seconds, 3), "timing": array_timing(attempts, work)},
        "cost": cost, "cost_per_image_usd": round(cost["total_usd"] / ok, 6) if ok else None,
        "budget": {"budget_usd": cfg.budget_usd, "estimate": info.estimate,
                   "abort": json.loads((work / "budget.json").read_text()) if (work / "budget.json").exists()
                   else None},
        "files": collated.get("files", {}),
    }
    doc["report"] = str(run_dir / "report.html")
    write_json(run_dir / "run.json", doc)
    report.write(run_dir, doc)
    log.info("run.json and report.html written: %s", run_dir)
    try:
        ledger.write(doc)
    except Exception as exc:  # noqa: BLE001 - the run's own files hold everything; say so loudly
        log.error("the run ledger could not be written (%s: %s); run.json has the row", type(exc).__name__, exc)
        failed_phases = failed_phases + ["ledger"]
    latest = _add_processed(info, storage, run_dir) if collated.get("ok") else None
    if not storage.is_local:
        for name in ("run.json", "report.html"):
            log.info("stored: %s", storage.put_run_file(info.project, info.run_id, name,
                                                       (run_dir / name).read_bytes()))
    lan = cfg.sync_to or cfg.sync_from
    if lan:
        write_json(Path(lan, "output", info.run_id, "run.json"), doc)
        Path(lan, "output", info.run_id, "report.html").write_bytes((run_dir / "report.html").read_bytes())
    notify.run_ended(doc)
    doc["failed_phases"] = failed_phases
    doc["latest_results"] = latest   # for the DAG's Asset event (not in run.json: it changes with later runs)
    return doc


def _add_processed(info: RunInfo, storage, run_dir: Path) -> dict[str, Any] | None:
    """The images that ended ``ok`` go in the processed-images index of this macro and its arguments, and
    their rows in the project's latest-results table (returned: where it is, for the Asset event)."""
    import csv

    try:
        ids = json.loads((run_dir / "work" / "images.json").read_text())
        with open(run_dir / "summary.csv", newline="") as fh:
            ok = {row["image"] for row in csv.DictReader(fh)}
        files: dict[str, list] = {}   # a file read through Bio-Formats is processed when all its series are
        for unit, cid in ids.items():
            entry = files.setdefault(contract.unit_parts(unit)[0], [cid, True])
            entry[1] = entry[1] and unit in ok
        held = processed.add(storage, info.project, processed.key(info.macro_sha256, info.config.macro_args),
                             {rel: cid for rel, (cid, all_ok) in files.items() if all_ok}, info.run_id)
        log.info("processed-images index of this macro: %d image(s) (%d from this run)", held, len(ok))
    except Exception as exc:  # noqa: BLE001 - the run's results are whole; only the next only_new run redoes more
        log.error("the processed-images index could not be updated (%s: %s): the next only_new run of this macro "
                  "will process these images again", type(exc).__name__, exc)
    try:
        where, images = processed.update_latest(storage, info.project, info.run_id, info.config.macro,
                                                run_dir / "summary.csv")
        log.info("latest results of %s: %d image(s) in %s", info.project, images, where)
        return {"project": info.project, "table": where, "images": images, "run_id": info.run_id}
    except Exception as exc:  # noqa: BLE001 - the run's own tables are whole
        log.error("the project's latest-results table could not be updated (%s: %s)", type(exc).__name__, exc)
        return None


def handoff(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``record`` hands ``outcome`` through XCom: the verdict and where run.json is, not the run doc
    (which grows with phases, attempts and costs and is written whole to run.json)."""
    return {"run_id": doc["run_id"], "status": doc["status"], "images": doc["images"],
            "failed_phases": doc["failed_phases"], "run_json": str(Path(doc["run_dir"], "run.json")),
            "phases": {name: {"status": rec.get("status"), "error": (rec.get("error") or "")[:1000] or None}
                       for name, rec in doc["phases"].items()}}


def outcome(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The run's verdict from what ``record`` wrote: raises when a phase failed (the DAG run then fails)."""
    if not recorded:
        raise SciOpsError("the run was not recorded (record failed: see its log, and validate's for the field "
                          "to fix)")
    failed = recorded.get("failed_phases") or []
    if failed:
        phases = recorded.get("phases") or {}
        raise SciOpsError(f"run {recorded['run_id']} failed in {', '.join(failed)}: "
                          + "; ".join(phases.get(p, {}).get("error") or f"{p} did not finish (see its log)"
                                      for p in failed)[:2000])
    return {"run_id": recorded["run_id"], "status": recorded["status"], "images": recorded["images"]}


def summary_table(run_dir: Path | str, limit: int = 20) -> str:
    """A short text table of ``summary.csv`` (for the demo and the record log)."""
    import pandas as pd

    path = Path(run_dir, "summary.csv")
    df = pd.read_csv(path)
    if "count" in df.columns:
        df["count"] = df["count"].astype("Int64")
    cols = [c for c in ("image", "count", "mean_area", "mean_intensity", "seconds") if c in df.columns]
    return df[cols].head(limit).to_string(index=False)
