"""``record`` and ``outcome``: the run's one verdict, decided and written down, then the DAG run's end.

``record`` decides the verdict (the phases, Airflow's task states, whether its own documents
could be written) and writes that same verdict into ``run.json``, ``report.html``, the ledger
row, the copies in the storage root and the LAN folder, and the Slack end message, for every
run that got past the project check, failed or not; ``outcome`` (the DAG's last task) fails
the DAG run exactly when that verdict is not ``success``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from sciops.accounting import ledger
from sciops.accounting.costs import task_intervals
from sciops.arrays.workdir import node_losses
from sciops.errors import SciOpsError
from sciops.phases import REFUSED, trigger_label
from sciops.reporting import results as results_mod
from sciops.reporting import notify, report
from sciops.run import choices, processed
from sciops.run.project import write_atomic
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


#: Tasks whose state ``record`` does not weigh: itself and what comes after it.
NOT_WEIGHED = ("record", "outcome")
#: Tasks whose phase record has another name (``sciops.operators.cluster``).
PHASE_OF_TASK = {"create_cluster": "cluster_create", "delete_cluster": "teardown"}
#: Tasks that run more than one phase (dags/fiji_project.py: fewer hops); a failed one of these speaks for the task.
PHASES_OF_TASK = {"validate": ("sync_up", "validate"), "plan": ("stage_in", "plan"),
                  "deliver": ("stage_out", "sync_down")}


def verdict_phases(phases: dict[str, dict[str, Any]], task_states: dict[str, str] | None) -> list[str]:
    """The failed phases: those whose record says so, and each task Airflow says failed though its
    phase record does not (it died, or its record could not be written: a full disk). ``phases`` gains
    a failed record for each of the latter, with what is known of it."""
    failed = [name for name, rec in phases.items() if rec.get("status") != "success"]
    for task, state in sorted((task_states or {}).items()):
        name = PHASE_OF_TASK.get(task, task)
        if state != "failed" or task in NOT_WEIGHED or {name, *PHASES_OF_TASK.get(task, ())} & set(failed):
            continue
        rec = phases.setdefault(name, {"phase": name})
        said = rec.get("status")
        rec["status"] = "failed"
        rec["error"] = (f"the {task} task failed, and its phase record says "
                        f"{said if said else 'nothing (it could not be written, or the task failed before it)'}: "
                        "see the task's log")
        failed.append(name)
    return failed


def _say(exc: BaseException) -> str:
    """An error as one line for run.json, the ledger and Slack (a SciOpsError says it all itself)."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, SciOpsError) else f"{type(exc).__name__}: {text}"


def record(info: RunInfo | dict[str, Any] | None, collated: dict[str, Any] | None = None, dag_id: str | None = None,
           trigger: str | None = None, synced_up: dict[str, Any] | None = None,
           task_states: dict[str, str] | None = None, dag_run_started: float | None = None) -> dict[str, Any]:
    """Decide the run's verdict, once, and write it everywhere: run.json, report.html, the ledger, the
    storage root's and the LAN folder's copies, then the Slack end message.

    For every run that got past the project check, failed or not. The verdict, in this order:

    1. the phases' own records and Airflow's task states (``task_states``, task id → state: a task that
       failed without its record saying so is a failed phase, :func:`verdict_phases`);
    2. the documents, each tried on its own, in order: ``report.html``, ``run.json``, the ledger row,
       the copies in the storage root (S3) and the LAN folder. One that cannot be written makes the
       verdict ``failed`` ("record" a failed phase, each document's reason in ``record_failed``); the
       documents already written with ``success`` are then written again with it (a file that cannot
       be is removed: no file is left saying another verdict);
    3. the Slack end message, with that verdict (a message that cannot be sent is a warning in the
       handoff, not a failure).

    :func:`outcome` (the DAG's last task) fails the DAG run exactly when the verdict is not ``success``.

    ``dag_run_started`` (epoch seconds: Airflow's start of the DAG run) and the time ``record`` began bound the
    run's wall time (``started_at``, ``ended_at``): the report accounts for it as the phases and Airflow's time
    between them.
    """
    recorded_at = time.time()
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
        if rec.get("end") and rec.get("start"):
            rec["seconds"] = round(rec["end"] - rec["start"], 3)
    failed_phases = verdict_phases(phases, task_states)
    collated = collated or {}
    attempts = json.loads((work / "attempts.json").read_text()) if (work / "attempts.json").exists() else []
    cpu_seconds = sum(a.get("seconds") or 0 for att in attempts for a in att["accounting"].values())
    starts = [p["start"] for p in phases.values() if p.get("start")] + ([dag_run_started] if dag_run_started else [])
    ends = [p.get("end") or recorded_at for p in phases.values() if p.get("start")] + [recorded_at]
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
        "started_at": min(starts) if starts else None, "ended_at": max(ends),
        "dag_run_started": dag_run_started, "recorded_at": recorded_at,
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
        "results": results_mod.analyse(run_dir) if collated.get("files") else None,
        "qc_overlays": collated.get("qc"),
        "report": str(run_dir / "report.html"),
    }
    doc = _deliver(doc, _sinks(info, storage, run_dir))
    log.info("run %s recorded: %s%s", info.run_id, doc["status"],
             f" ({doc['reason']})" if doc["status"] != "success" and doc.get("reason") else "")
    latest = _add_processed(info, storage, run_dir) if collated.get("ok") else None
    choices.refresh_project(storage, info.project)   # the trigger form's project list (an S3 root's cache file)
    said = notify.run_ended(doc)
    doc["warnings"] = [said] if said else []
    doc["latest_results"] = latest   # for the DAG's Asset event (not in run.json: it changes with later runs)
    return doc


Sink = tuple[str, Callable[[dict[str, Any]], Any]]


def _sinks(info: RunInfo, storage, run_dir: Path) -> list[Sink]:
    """Where the run's verdict is written, in order (see :func:`record`); each a name and a writer of a run doc."""
    pages: dict[int, tuple[dict[str, Any], str]] = {}

    def page(doc: dict[str, Any]) -> str:   # report.html of this doc, rendered once
        if id(doc) not in pages:
            pages[id(doc)] = (doc, report.render(run_dir, doc))
        return pages[id(doc)][1]

    def run_json(doc: dict[str, Any]) -> str:
        return json.dumps(doc, indent=1, default=str)

    def local(name: str, content: Callable[[dict[str, Any]], str]):
        def write(doc: dict[str, Any]) -> None:
            path = run_dir / name
            try:
                write_atomic(path, content(doc))
            except BaseException:
                try:   # never a file from an earlier verdict beside this one
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
                raise
        return write

    sinks: list[Sink] = [("report.html", local("report.html", page)), ("run.json", local("run.json", run_json)),
                         ("ledger", ledger.write)]
    if not storage.is_local:
        def stored(doc: dict[str, Any]) -> None:
            for name, content in (("run.json", run_json), ("report.html", page)):
                log.info("stored: %s", storage.put_run_file(info.project, info.run_id, name,
                                                           content(doc).encode("utf-8")))
        sinks.append((f"the copy in {storage.url}", stored))
    lan = info.config.sync_to or info.config.sync_from
    if lan:
        def lan_copy(doc: dict[str, Any]) -> None:
            folder = Path(lan, "output", info.run_id)
            write_atomic(folder / "run.json", run_json(doc))
            write_atomic(folder / "report.html", page(doc))
        sinks.append((f"the copy in {lan}", lan_copy))
    return sinks


def _with_record_failures(doc: dict[str, Any], failures: dict[str, str]) -> dict[str, Any]:
    """``doc`` with the documents that could not be written: failed (a budget or refusal verdict kept),
    ``record`` among the failed phases, the reasons in ``record_failed`` and in ``reason``."""
    said = "record: " + "; ".join(f"{name} not written: {why}" for name, why in failures.items())
    failed = [p for p in doc["failed_phases"] if p != "record"]
    first = next((doc["phases"][p].get("error") for p in failed if doc["phases"][p].get("error")), None)
    return {**doc, "status": "failed" if doc["status"] == "success" else doc["status"],
            "failed_phases": failed + ["record"], "record_failed": dict(failures),
            "reason": f"{first}; {said}" if first else said}


def _deliver(doc: dict[str, Any], sinks: list[Sink]) -> dict[str, Any]:
    """Write ``doc`` to each sink on its own; the doc as finally written (its verdict the one every sink
    that could be written holds). See :func:`record`, step 2."""
    failures: dict[str, str] = {}
    for _ in range(2):
        again = False
        for name, write in sinks:
            try:
                write(doc)
            except Exception as exc:  # noqa: BLE001 - each document on its own; the verdict says which failed
                failures[name] = _say(exc)
                log.error("record: %s could not be written: %s", name, failures[name])
                was = doc["status"]
                doc = _with_record_failures(doc, failures)
                if was == "success":   # what is written so far says success: write everything again
                    again = True
                    break
        if not again:
            break
    return doc


def _add_processed(info: RunInfo, storage, run_dir: Path) -> dict[str, Any] | None:
    """The images that ended ``ok`` go in the processed-images index of this macro and its arguments, and
    their rows in the project's latest-results table (returned: where it is, for the Asset event)."""
    import csv

    from sciops.reporting.cells import plain

    try:
        ids = json.loads((run_dir / "work" / "images.json").read_text())
        with open(run_dir / "summary.csv", newline="") as fh:
            ok = {plain(row["image"]) for row in csv.DictReader(fh)}   # a name as written: '=x.tif is =x.tif
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
                       for name, rec in doc["phases"].items()},
            "record_failed": {k: v[:1000] for k, v in (doc.get("record_failed") or {}).items()},
            "warnings": [w[:1000] for w in doc.get("warnings") or []]}


def outcome(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The DAG run's end, from ``record``'s verdict: raises exactly when it is not ``success`` (the DAG run
    then fails), saying where and why; ``record``'s warnings (a Slack message not sent) are logged."""
    if not recorded:
        raise SciOpsError("the run was not recorded (record failed: see its log, and validate's for the field "
                          "to fix)")
    warnings = recorded.get("warnings") or []
    for warning in warnings:
        log.warning("%s", warning)
    if recorded["status"] != "success":
        failed = recorded.get("failed_phases") or []
        phases = recorded.get("phases") or {}
        said = []
        for p in failed:
            if p == "record":
                said += [f"{name} not written: {why}" for name, why in (recorded.get("record_failed") or {}).items()]
            else:
                said.append(phases.get(p, {}).get("error") or f"{p} did not finish (see its log)")
        raise SciOpsError((f"run {recorded['run_id']} ended {recorded['status']}"
                           + (f", in {', '.join(failed)}: " if failed else ": ") + "; ".join(said)
                           + (f" (also: {'; '.join(warnings)})" if warnings else ""))[:3000])
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
