"""``plan``: the run's images cut into chunks, the manifest the array runs from, the job files."""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from sciops.arrays.orphans import ORPHANS, cancel_orphans
from sciops.errors import SchedulerQueryError, SciOpsError
from sciops.imaging import bioformats
from sciops.phases import phase, phase_note
from sciops.run.chunking import chunk, chunk_sizes
from sciops.run.project import Project, expected_outputs, macro_sha256, stage_job_files, write_json
from sciops.run.runinfo import RunInfo
from sciops_node import contract
from sciops_node.contract import Manifest

log = logging.getLogger(__name__)


def manifest_of(info: RunInfo, backend, project: Project, job: dict[str, Path], chunks: list[list[str]],
                expected: list[str], **more: Any) -> Manifest:
    """What the task runner reads (paths as the cluster sees them) and ``run_array`` drives the array from.

    ``more``: the fields the caller adds (plan: unreadable units, budget, plan id; validate's smoke run:
    paths as this worker sees them)."""
    cfg, on_cluster = info.config, backend.cluster_path
    return Manifest(**{
        "run_id": info.run_id, "project": project.name, "run_dir": on_cluster(info.run_dir),
        "work_dir": on_cluster(Path(info.run_dir, "work")), "input_dir": on_cluster(project.input_dir),
        "macro_path": on_cluster(job.get("macro_run", job["macro"])), "driver_path": on_cluster(job["driver"]),
        "macro_args": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.macro_args.items()},
        "macro_argument": cfg.macro_argument, "channel": cfg.channel,
        "expected_outputs": expected, "chunks": chunks, "memory_mb": cfg.memory_mb,
        "image_timeout_s": cfg.image_timeout_s, "stall_seconds": cfg.stall_seconds, "qc_images": cfg.qc_images,
        "max_attempts": cfg.max_attempts, "backend": cfg.backend,
        "backend_options": backend.options_for(cfg, backend.cluster), "launcher": info.launcher,
        "airflow_run_id": info.airflow_run_id, **more,
    })


def bioformats_memo(work: str, bf: dict[str, Any] | None) -> str | None:
    """The manifest's ``bioformats_memo`` when units are read through Bio-Formats (``bf``: their names):
    where validate's probe left the files' memo (``work/bfmemo``), which the tasks read and add to."""
    return contract.memo_dir(str(work)) if bf and bf.get("series_names") else None


def _images(info: RunInfo, project: Project) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """The run's units of work (images, or series of files read through Bio-Formats), their content ids
    (a series: its file's), and what Bio-Formats adds to the manifest. The images are the ones validate
    chose from its one listing of input/ (``work/inputs.json``: ``only_new`` applied): none is listed again."""
    cfg = info.config
    ids = json.loads(Path(info.run_dir, "work", "inputs.json").read_text(encoding="utf-8"))
    images = list(ids)
    probed = bioformats.load(Path(info.run_dir, "work"))   # validate read the series of these files
    extra: dict[str, Any] = {}
    if probed:
        units, unreadable, _, names = bioformats.expand(images, probed, cfg.series, cfg.channel,
                                                        contract.heap_mb(cfg.memory_mb))
        images = units + (list(unreadable) if cfg.skip_unreadable else [])
        extra = {"unreadable": unreadable if cfg.skip_unreadable else {}, "series_names": names}
    files = {u: bioformats.unit_parts(u)[0] for u in images}
    return images, {u: ids[f] for u, f in files.items() if ids.get(f)}, extra


def cancel_earlier_arrays(info: RunInfo, backend, run_dir: Path) -> list[dict[str, Any]]:
    """Cancel the arrays an earlier plan of this run left in the queue, before this plan writes over them.

    They would run on unattended (nothing watches them any more), writing into this run folder
    and reading the new manifest. Recorded in ``work/orphans.json`` and in this plan's phase record
    (``orphans_cancelled``, which run.json keeps). When the scheduler cannot be asked, the plan fails:
    it does not plan over an array it cannot see.
    """
    work = run_dir / "work"
    try:
        cancelled = cancel_orphans(backend.scheduler(str(work)), backend.runner(), info.run_id,
                                   backend.cluster_path(work), work,
                                   why="superseded: the run was planned again (a new plan of the same run id)")
    except SchedulerQueryError as exc:
        raise SciOpsError(f"cannot tell whether an earlier plan of run {info.run_id} left an array running ({exc}); "
                          "not planning over it: try again once the scheduler answers") from exc
    if cancelled:
        phase_note(run_dir, "plan", "orphans_cancelled", cancelled)
        log.warning("cancelled %d array job(s) an earlier plan of this run left running: %s (see work/%s)",
                    len(cancelled), ", ".join(f"{j['job_id']} ({j['name']})" for j in cancelled), ORPHANS)
    return cancelled


def plan(info: RunInfo | dict[str, Any], cluster: dict[str, Any] | None = None,
         dag_id: str = "fiji_project") -> dict[str, Any]:
    """List the images, cut them into chunks, write the manifest and the job files.

    ``cluster``: ``create_cluster``'s answer (the head node), for a backend that made one. On a
    cluster that does not share this worker's files, the run folder is then sent there. First, the
    arrays an earlier plan of the run left running are cancelled (:func:`cancel_earlier_arrays`).
    """
    info = RunInfo.of(info)
    cfg, run_dir = info.config, Path(info.run_dir)
    with phase(run_dir, "plan"), info.backend(cluster) as backend:
        orphans = cancel_earlier_arrays(info, backend, run_dir)
        project = Project(info.project, Path(info.project_root))
        images, ids, bf = _images(info, project)
        macro = Path(info.macro_path)
        work = run_dir / "work"
        job = stage_job_files(work, macro)
        if macro_sha256(job["macro"]) != info.macro_sha256:
            raise SciOpsError(f"macro {macro} changed between validate and plan; trigger the run again")
        sizes = chunk_sizes(len(images), cfg.images_per_task, backend.known_slots())
        chunks = chunk(images, sizes)
        per_task = max(sizes, default=0)
        # The scheduler writes task logs here and the runners their statuses: both must exist
        # before submission (SGE leaves a task in Eqw forever when its -o folder is missing).
        # (and the files' memo folder, which validate made: group-writable for a cluster's job user)
        dirs = [run_dir / "logs", work / "status", work / "images"]
        if bf:
            dirs.append(Path(contract.memo_dir(str(work))))
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            if backend.group_writable:
                d.chmod(0o2775)
        info = backend.prepare(info)
        manifest = manifest_of(info, backend, project, job, chunks, expected_outputs(macro),
                               unreadable=bf.get("unreadable") or {}, budget=backend.budget_rates(run_dir),
                               plan_id=uuid.uuid4().hex[:8],  # in the job names: see arrays.job_name
                               dag_id=dag_id, bioformats_memo=bioformats_memo(backend.cluster_path(work), bf))
        path = Path(manifest.dump(contract.manifest_path(str(work))))
        write_json(work / "images.json", ids)   # what record adds to the processed-images index
        if bf:   # the series names, for the tables' series_name column
            write_json(work / "units.json", bf["series_names"])
        # what a progress poll needs, without parsing the manifest's image lists (9 MB at 100,000 images)
        write_json(work / "plan.json", {"images": len(images), "tasks": len(chunks), "images_per_task": per_task,
                                         "budget": manifest.budget})
        if not backend.shares_files:
            backend.send_run(info, dirs)
    log.info("planned %d image(s) in %d task(s) of up to %d%s", len(images), len(chunks), per_task,
             "" if cfg.images_per_task else " (images_per_task: 0, auto)")
    return {"manifest": str(path), "tasks": len(chunks), "images": len(images),
            "orphans_cancelled": [j["job_id"] for j in orphans]}
