"""The entry script: signals, a run's staged job folder, and the names it re-exports for now."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sciops_task

from sciops_node import chunk, contract, hygiene, jvm, units


@pytest.mark.parametrize("sig, says", [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR2, "qdel")])
def test_a_stopped_task_writes_its_summary(tmp_path, sig, says, fake_imagej_run, begun_safe):
    """scancel (SIGTERM) and Grid Engine's -notify before qdel (SIGUSR2): the summary has the end (for the cost)."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_slow.tif"], "*slow*) sleep 30 ;;")
    proc = subprocess.Popen([sys.executable, sciops_task.__file__, "--manifest", str(mpath), "--task", "1"])
    path = work / "status" / "task-0001.attempt-1.json"
    deadline = time.time() + 20
    while "b_slow.tif" not in begun_safe(work) and time.time() < deadline:
        time.sleep(0.1)
    assert json.loads(path.read_text())["end"] is None        # written at the start
    proc.send_signal(sig)
    assert proc.wait(20) == 128 + sig
    summary = json.loads(path.read_text())
    assert summary["exit"] == 128 + sig and says in summary["error"] and summary["end"] > summary["start"]


def test_a_staged_job_folder_runs_on_its_own(tmp_path, monkeypatch, fake_imagej_run):
    """``stage_job_files`` copies the runner and its package into work/job/; from there (no include/job on
    the path) it runs, and leaves no bytecode in the run's folder (neither this worker's nor its own)."""
    import sciops.run.project as project

    job_src = tmp_path / "include-job"
    shutil.copytree(Path(sciops_task.__file__).parent, job_src, ignore=shutil.ignore_patterns("__pycache__"))
    (job_src / "sciops_node" / "__pycache__").mkdir()
    (job_src / "sciops_node" / "__pycache__" / "contract.cpython-311.pyc").write_bytes(b"stale")
    monkeypatch.setattr(project, "JOB_DIR", job_src)
    macro = tmp_path / "m.ijm"
    macro.write_text('print("hello");\n')
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], "")
    job = project.stage_job_files(work, macro)
    assert job["node"] == work / "job" / "sciops_node"
    assert sorted(p.name for p in job["node"].iterdir()) == \
        sorted(p.name for pattern in ("*.py", "*.java") for p in (job_src / "sciops_node").glob(pattern))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    rc = subprocess.run([sys.executable, str(job["runner"]), "--manifest", str(mpath), "--task", "1"],
                        cwd=tmp_path, env=env, timeout=60).returncode
    assert rc == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "ok"}
    assert not list((work / "job").rglob("__pycache__"))
    # staged again (validate stages, then plan): a module gone from the source is gone from the run too
    (job["node"] / "removed_since.py").write_text("")
    project.stage_job_files(work, macro)
    assert not (job["node"] / "removed_since.py").exists()


#: What the Airflow side (sciops.runner_module()), the tests and the benchmarks still take from sciops_task.
REEXPORTED = {
    contract: ["heap_mb", "unit_parts", "UNIT_RE", "RESULT_KEYS", "SUMMARY_KEYS", "read_statuses", "scan_statuses",
               "status_path", "image_output_dir", "count_path", "task_log_path", "tables_dir", "append_status",
               "_records", "FINAL", "BEGIN", "EXIT_IMAGEJ_BROKEN", "EXIT_INTERRUPTED", "EXIT_DELETED"],
    jvm: ["bioformats_version", "Xvfb"],
    chunk: ["ChunkRunner"],
    hygiene: ["remove_stale_scratch"],
    units: ["argument_for"],
}


def test_sciops_task_re_exports_the_names_its_importers_use():
    """Until plugins import sciops_node.contract: the same objects, under their old names."""
    for module, names in REEXPORTED.items():
        for name in names:
            assert getattr(sciops_task, name) is getattr(module, name), name
