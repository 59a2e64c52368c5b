"""fiji_project on Slurm over SSH (backend existing, scheduler slurm): same results, kill -9, memory limit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import fresh_dag, task_states, wrapping_macro

pytestmark = pytest.mark.imagej

MACRO = wrapping_macro(
    'if (indexOf(input, "_slow.") >= 0) wait(5000);',
    "// a memory-hungry native helper (as a plugin calling out would be): 1.5 GB beyond the JVM",
    'if (indexOf(input, "_hog.") >= 0) exec("python3", "-c", "import time; x = bytearray(1536 * 1024 * 1024); '
    'time.sleep(20)");',
)


def slurm_conf(project: str, **kw):
    return {"project": project, "backend": "existing", "scheduler": "slurm", "ssh_conn_id": "sciops_cluster",
            "memory": "1G", "stall_seconds": 10, **kw}


def runs(root: Path) -> list[Path]:
    return sorted((p for p in (root / "output").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def test_slurm_results_identical_to_local(airflow_db, slurm, shared_storage, make_project):
    counts = {"n05.tif": 5, "n12.tif": 12, "sub dir/n17.tif": 17, "n26.tif": 26, "n33.tif": 33}
    root = make_project("same", counts=counts, size=256)
    dr = fresh_dag().test(run_conf={"project": "same", "images_per_task": 2, "memory": "1G"})
    assert dr.state == "success", task_states(dr)
    dr = fresh_dag().test(run_conf=slurm_conf("same", images_per_task=2))
    assert dr.state == "success", task_states(dr)
    local_run, slurm_run = runs(root)
    volatile = ["task", "attempt", "seconds"]
    a = pd.read_csv(local_run / "summary.csv").drop(columns=volatile).sort_values("image").reset_index(drop=True)
    b = pd.read_csv(slurm_run / "summary.csv").drop(columns=volatile).sort_values("image").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(local_run / "results.csv").drop(columns=["task", "attempt"]),
                                  pd.read_csv(slurm_run / "results.csv").drop(columns=["task", "attempt"]))
    assert json.loads((slurm_run / "run.json").read_text())["params"]["scheduler"] == "slurm"


def kill_task_script(task: int, stop: threading.Event, killed: list):
    """kill -9 the batch script of array task ``task`` (what a node's OOM killer or an admin does)."""
    while not stop.is_set() and not killed:
        out = subprocess.run(["pgrep", "-u", "sciops", "-f", "sciops_task.py"], capture_output=True, text=True).stdout
        for pid in out.split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if f"SLURM_ARRAY_TASK_ID={task}".encode() in env and b"SCIOPS_ATTEMPT=1" in env:
                    time.sleep(1.5)
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            except OSError:
                continue
        time.sleep(0.2)


def test_slurm_killed_task_is_resubmitted_and_memory_limit_reported(airflow_db, slurm, shared_storage,
                                                                    make_project):
    counts = {"a1_slow.tif": 4, "a2.tif": 6, "b1_hog.tif": 3, "c1.tif": 9}
    root = make_project("faults", counts=counts, size=256)
    (root / "src" / "faulty.ijm").write_text(MACRO)
    stop, killed = threading.Event(), []
    threading.Thread(target=kill_task_script, args=(1, stop, killed), daemon=True).start()
    dr = fresh_dag().test(run_conf=slurm_conf("faults", macro="src/faulty.ijm", images_per_task=2, max_attempts=2,
                                              smoke_test=False))
    stop.set()
    assert killed, "the test never found the task to kill"
    assert dr.state == "success", task_states(dr)
    run_dir = runs(root)[-1]
    attempts = json.loads((run_dir / "work" / "attempts.json").read_text())
    # Slurm reports the killed script as FAILED 0:9 or 9:0 depending on who saw it die
    assert attempts[0]["accounting"]["1"]["state"] == "failed"
    assert attempts[1]["accounting"]["1"]["state"] == "done"
    assert attempts[1]["tasks"] == [1, 2]           # the killed chunk and the memory-killed one, not chunk 3
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    failures = pd.read_csv(run_dir / "failures.csv").set_index("image")
    assert {"a1_slow.tif", "a2.tif"} <= set(summary.index)      # the killed task's images all made it
    assert "b1_hog.tif" in failures.index
    assert "exceeded memory limit" in failures.loc["b1_hog.tif", "error"]
    # the memory kill took the runner too: only the image in flight is blamed, the chunk's other image
    # (never reached in attempt 1) ran first in attempt 2
    assert "in flight when the task died" in failures.loc["b1_hog.tif", "error"]
    assert "c1.tif" in summary.index and "c1.tif" not in failures.index


SLOW_EACH = wrapping_macro('wait(2500);')


def when_images_done(root: Path, n: int, action, timeout: float = 180) -> list:
    """In a thread: once ``n`` images of the project's run have a final status, call ``action()``.

    The DAG runs in the test's main thread (``dag.test`` handles signals); the fault comes from here.
    """
    import sciops_task as st

    did: list = []

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = sum(len(st.read_statuses(str(p))) for p in root.glob("output/*/work/status/task-*.jsonl"))
            if done >= n:
                did.append(action())
                return
            time.sleep(0.3)

    threading.Thread(target=watch, daemon=True).start()
    return did


def _slurm_jobs(name_part: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%F|%j"], capture_output=True, text=True).stdout
    return sorted({line.split("|")[0] for line in out.splitlines() if name_part in line})


def test_scancel_of_a_one_task_array_is_not_resubmitted(airflow_db, slurm, shared_storage, make_project):
    """Every image in one chunk, scancel'd after the first: a deletion, whatever the task count."""
    counts = {f"s{i}.tif": 3 + i for i in range(4)}
    root = make_project("onetask", counts=counts, size=128)
    (root / "src" / "slow.ijm").write_text(SLOW_EACH)

    def scancel():
        [job] = _slurm_jobs("sciops-")
        subprocess.run(["scancel", job], check=True)
        return job

    did = when_images_done(root, 1, scancel)
    dr = fresh_dag().test(run_conf=slurm_conf("onetask", macro="src/slow.ijm", images_per_task=4, max_attempts=3,
                                              smoke_test=False))
    [job] = did
    states = task_states(dr)
    assert dr.state == "failed" and states["run_array"] == "failed", states
    run_dir = runs(root)[-1]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["array"]["attempts"] == 1 and run["array"]["job_ids"] == [job]      # not resubmitted
    assert "cancelled outside SciOps" in run["reason"]
    summary = pd.read_csv(run_dir / "summary.csv")
    failures = pd.read_csv(run_dir / "failures.csv").set_index("image")
    assert len(summary) >= 1 and len(summary) + len(failures) == 4                 # nothing lost
    assert all("scancel" in e for e in failures["error"]), failures["error"].tolist()
    assert run["cost"]["total_usd"] >= 0 and run["array"]["task_seconds"] > 0


def test_a_node_lost_under_its_tasks_resubmits_them_without_spending_an_attempt(airflow_db, slurm, shared_storage,
                                                                                  make_project):
    """scontrol update state=down (a reclaimed spot node) mid-run, with max_attempts 1: every image still ends ok."""
    counts = {f"n{i}.tif": 3 + i for i in range(6)}
    root = make_project("nodeloss", counts=counts, size=128)
    (root / "src" / "slow.ijm").write_text(SLOW_EACH)
    node = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    did = when_images_done(root, 1, lambda: subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", "reason=spot"], check=True))
    try:
        dr = fresh_dag().test(run_conf=slurm_conf("nodeloss", macro="src/slow.ijm", images_per_task=3,
                                                  max_attempts=1, smoke_test=False, hourly_rate_usd=36.0))
    finally:   # ReturnToService=2 brings it back when slurmd registers; make sure of it
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    assert did, "the node was never taken down"
    assert dr.state == "success", task_states(dr)
    run_dir = runs(root)[-1]
    run = json.loads((run_dir / "run.json").read_text())
    attempts = json.loads((run_dir / "work" / "attempts.json").read_text())
    assert {a["state"] for a in attempts[0]["accounting"].values()} == {"lost"}
    assert run["array"]["node_losses"] == 2 and run["array"]["attempts"] == 2
    summary = pd.read_csv(run_dir / "summary.csv")
    assert sorted(summary["image"]) == sorted(counts) and len(pd.read_csv(run_dir / "failures.csv")) == 0
    assert (summary["attempt"] == 1).any()                     # images done before the loss were not redone
    assert run["cost"]["lost_node_hours"] > 0 and run["cost"]["total_usd"] > run["cost"]["lost_node_hours"] * 36
