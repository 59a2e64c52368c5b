"""The bodies of the ``fiji_project`` tasks, free of Airflow so they are plain to test.

validate → plan → run_array → collate → record. Each phase writes its start, end and
outcome to ``output/<run_id>/work/phases/<phase>.json``; ``record`` turns them into
``run.json``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sciops import config as config_mod
from sciops.errors import ConfigError, SciOpsError, StorageError
from sciops.imagej import require_launcher, smoke_candidates, smoke_run
from sciops.project import (Project, chunk, expected_outputs, read_manifest, safe_run_id, sha256, stage_job_files,
                            write_manifest)
from sciops.storage import get_storage

log = logging.getLogger(__name__)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def phase(run_dir: Path | str, name: str, start: float | None = None) -> Iterator[dict[str, Any]]:
    """Record one phase's start, end and outcome (rewritten on a retry: keyed by phase name)."""
    path = Path(run_dir, "work", "phases", f"{name}.json")
    rec: dict[str, Any] = {"phase": name, "start": start or time.time(), "status": "running"}
    _write_json(path, rec)
    try:
        yield rec
    except BaseException as exc:
        rec.update(end=time.time(), status="failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    else:
        rec.update(end=time.time(), status="success")
    finally:
        _write_json(path, rec)


def open_project(name: Any) -> Project:
    """The project folder under the storage root, or a ConfigError that says what exists."""
    if not isinstance(name, str) or not config_mod.SAFE_NAME.match(name):
        config_mod.build({"project": name if isinstance(name, str) else ""})  # raises with the rule
    storage = get_storage()
    try:
        storage.check()
        root = storage.path(name)
    except StorageError as exc:
        raise ConfigError([("project", str(exc))]) from None
    if not root.is_dir():
        existing = sorted(p.name for p in storage.root.iterdir() if p.is_dir())[:20]
        raise ConfigError([("project", f"no project folder {name!r} under {storage.root}; existing projects: "
                                       f"{', '.join(existing) or 'none'}. Sync the project up first or fix the name")])
    return Project(name, root)


def check(conf: dict[str, Any]) -> tuple[config_mod.RunConfig, Project, list[str], Path]:
    """Every check that needs no ImageJ: config, project, input, macro. Raises ConfigError."""
    project = open_project(conf.get("project"))
    cfg = config_mod.build(conf, project.defaults())
    if not project.input_dir.is_dir():
        raise ConfigError([("project", f"project {project.name!r} has no input/ folder; put the images in "
                                       f"{project.input_dir}")])
    images = project.list_images(cfg.patterns)
    if not images:
        raise ConfigError([("file_pattern", f"no file in {project.input_dir} matches {cfg.file_pattern!r}; "
                                            "add images or change the pattern (e.g. '*.tif,*.png')")])
    macro = project.resolve_macro(cfg.macro)
    return cfg, project, images, macro


def validate(conf: dict[str, Any], airflow_run_id: str,
             publish: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check everything before anything is spent; returns what later tasks need (an XCom).

    ``publish`` receives the run info as soon as the run folder exists, before the smoke
    run, so that ``record`` can write ``run.json`` even when the smoke run fails.
    """
    started = time.time()
    cfg, project, images, macro = check(conf)
    launcher = require_launcher(cfg.launcher)
    run_id = safe_run_id(airflow_run_id)
    run_dir = project.run_dir(run_id)
    info = {"run_id": run_id, "airflow_run_id": airflow_run_id, "project": project.name,
            "project_root": str(project.root), "run_dir": str(run_dir), "config": cfg.model_dump(),
            "images": len(images), "macro_path": str(macro), "macro_sha256": sha256(macro), "launcher": launcher,
            "imagej_version": None}
    with phase(run_dir, "validate", start=started):
        if publish:
            publish(info)
        if cfg.smoke_test:
            job = stage_job_files(run_dir / "work", macro)
            manifest = _manifest(info, cfg, project, job, chunks=[], expected=expected_outputs(macro))
            summary = smoke_run(manifest, smoke_candidates(project.input_dir, images))
            info["imagej_version"] = summary.get("imagej_version")
    log.info("run %s of project %s: %d image(s), macro %s (sha256 %s), ImageJ %s", run_id, project.name,
             len(images), cfg.macro, info["macro_sha256"][:12], info["imagej_version"] or "not smoke-tested")
    return info


def _manifest(info: dict[str, Any], cfg: config_mod.RunConfig, project: Project, job: dict[str, Path],
              chunks: list[list[str]], expected: list[str]) -> dict[str, Any]:
    run_dir = Path(info["run_dir"])
    return {
        "run_id": info["run_id"], "project": project.name, "run_dir": str(run_dir),
        "work_dir": str(run_dir / "work"), "input_dir": str(project.input_dir),
        "macro_path": str(job["macro"]), "driver_path": str(job["driver"]),
        "macro_args": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.macro_args.items()},
        "expected_outputs": expected, "chunks": chunks, "memory_mb": cfg.memory_mb,
        "image_timeout_s": cfg.image_timeout_s, "stall_seconds": cfg.stall_seconds,
        "max_attempts": cfg.max_attempts, "backend": cfg.backend, "slots": cfg.slots, "launcher": info["launcher"],
    }


def plan(info: dict[str, Any]) -> dict[str, Any]:
    """List the images, cut them into chunks, write the manifest and the job files."""
    cfg = config_mod.RunConfig(**info["config"])
    run_dir = Path(info["run_dir"])
    with phase(run_dir, "plan"):
        project = Project(info["project"], Path(info["project_root"]))
        images = project.list_images(cfg.patterns)
        macro = Path(info["macro_path"])
        work = run_dir / "work"
        job = stage_job_files(work, macro)
        if sha256(job["macro"]) != info["macro_sha256"]:
            raise SciOpsError(f"macro {macro} changed between validate and plan; trigger the run again")
        chunks = chunk(images, cfg.images_per_task)
        manifest = _manifest(info, cfg, project, job, chunks, expected_outputs(macro))
        path = write_manifest(work / "manifest.json", manifest)
    log.info("planned %d image(s) in %d task(s) of up to %d", len(images), len(chunks), cfg.images_per_task)
    return {"manifest": str(path), "tasks": len(chunks), "images": len(images)}


def collate(info: dict[str, Any], manifest_path: str) -> dict[str, Any]:
    from sciops.results import collate as collate_results

    run_dir = Path(info["run_dir"])
    with phase(run_dir, "collate"):
        return collate_results(run_dir, read_manifest(manifest_path)).as_dict()


def _imagej_version(work: Path, info: dict[str, Any]) -> str | None:
    for path in sorted(work.glob("status/task-*.attempt-*.json")):
        version = json.loads(path.read_text()).get("imagej_version")
        if version:
            return version
    return info.get("imagej_version")


def record(info: dict[str, Any] | None, collated: dict[str, Any] | None = None, dag_id: str | None = None,
           trigger: str | None = None) -> dict[str, Any]:
    """Write ``run.json`` for every run that got past the project check, failed or not.

    Raises after writing when a phase failed, so the DAG run ends failed.
    """
    if not info:
        raise SciOpsError("validate did not pass: nothing was run and there is no run folder to record in "
                          "(see the validate task's log for the field to fix)")
    run_dir = Path(info["run_dir"])
    work = run_dir / "work"
    phases = {}
    for path in sorted(work.glob("phases/*.json")):
        rec = json.loads(path.read_text())
        if rec.get("end"):
            rec["seconds"] = round(rec["end"] - rec["start"], 3)
        phases[rec["phase"]] = rec
    failed_phases = [name for name, rec in phases.items() if rec["status"] != "success"]
    collated = collated or {}
    attempts = json.loads((work / "attempts.json").read_text()) if (work / "attempts.json").exists() else []
    cpu_seconds = sum(a.get("seconds") or 0 for att in attempts for a in att["accounting"].values())
    starts = [p["start"] for p in phases.values()]
    ends = [p.get("end") or time.time() for p in phases.values()]
    doc = {
        "run_id": info["run_id"], "airflow_run_id": info["airflow_run_id"], "dag_id": dag_id,
        "trigger": trigger, "project": info["project"], "params": info["config"],
        "macro": {"name": info["config"]["macro"], "sha256": info["macro_sha256"]},
        "imagej_version": _imagej_version(work, info), "launcher": info["launcher"].get("kind"),
        "status": "failed" if failed_phases else "success", "failed_phases": failed_phases,
        "started_at": min(starts) if starts else None, "ended_at": max(ends) if ends else None,
        "phases": phases,
        "images": {"total": info["images"], "ok": collated.get("ok"), "failed": collated.get("failed")},
        "array": {"attempts": len(attempts), "job_ids": [a["job_id"] for a in attempts],
                  "task_seconds": round(cpu_seconds, 3)},
        "files": collated.get("files", {}),
    }
    _write_json(run_dir / "run.json", doc)
    log.info("run.json written: %s", run_dir / "run.json")
    if failed_phases:
        raise SciOpsError(f"run {info['run_id']} failed in {', '.join(failed_phases)}: "
                          + "; ".join(phases[p].get("error", "") for p in failed_phases)[:2000])
    return doc


def summary_table(run_dir: Path | str, limit: int = 20) -> str:
    """A short text table of ``summary.csv`` (for the demo and the record log)."""
    import pandas as pd

    path = Path(run_dir, "summary.csv")
    df = pd.read_csv(path)
    if "count" in df.columns:
        df["count"] = df["count"].astype("Int64")
    cols = [c for c in ("image", "count", "mean_area", "mean_intensity", "seconds") if c in df.columns]
    return df[cols].head(limit).to_string(index=False)
