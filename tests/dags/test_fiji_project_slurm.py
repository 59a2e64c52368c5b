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
