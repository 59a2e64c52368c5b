"""fiji_project on Grid Engine over SSH (backend existing, scheduler sge), with faults injected."""
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

FAULTY_MACRO = wrapping_macro(
    'if (indexOf(input, "_slow.") >= 0) wait(5000);',
    "// kill the task runner (this JVM's parent) and this JVM: the whole task dies, every attempt",
    'if (indexOf(input, "_crash.") >= 0) exec("sh", "-c", "kill -9 $(ps -o ppid= $PPID) $PPID");',
)


@pytest.fixture
def fiji_dag():
    return fresh_dag()


def sge_conf(project: str, **kw):
    return {"project": project, "backend": "existing", "scheduler": "sge", "ssh_conn_id": "sciops_cluster",
            "memory": "1G", "stall_seconds": 10, **kw}


def only_run(root: Path) -> Path:
    runs = [p for p in (root / "output").iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_sge_results_identical_to_local(airflow_db, fiji_dag, gridengine, shared_storage, make_project):
    counts = {"n05.tif": 5, "n12.tif": 12, "sub dir/n17.tif": 17, "n26.tif": 26, "n33.tif": 33}
    root = make_project("same", counts=counts, size=256)
    dr = fiji_dag.test(run_conf={"project": "same", "images_per_task": 2, "memory": "1G"})
    assert dr.state == "success", task_states(dr)
    local_run = only_run(root)
    import shutil

    shutil.move(str(local_run), str(root / "local-run"))
    dr = fresh_dag().test(run_conf=sge_conf("same", images_per_task=2))
    assert dr.state == "success", task_states(dr)
    sge_run = only_run(root)
    volatile = ["task", "attempt", "seconds"]
    a = pd.read_csv(root / "local-run" / "summary.csv").drop(columns=volatile).sort_values("image")
    b = pd.read_csv(sge_run / "summary.csv").drop(columns=volatile).sort_values("image")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    ra = pd.read_csv(root / "local-run" / "results.csv").drop(columns=["task", "attempt"])
    rb = pd.read_csv(sge_run / "results.csv").drop(columns=["task", "attempt"])
    pd.testing.assert_frame_equal(ra, rb)
    assert dict(zip(b["image"], b["count"])) == counts
    run = json.loads((sge_run / "run.json").read_text())
    assert run["params"]["backend"] == "existing" and run["array"]["job_ids"][0].isdigit()


def kill_jvm_of(root: Path, image_part: str, stop: threading.Event, killed: list):
    """kill -9 the JVM working on the image whose name holds ``image_part`` (once): its task is the one whose
    status file has the image's ``begin`` line (the driver deletes its job file as it starts, so the job file
    cannot say), its JVM the one whose scratch folder is that task's (``sciops-task<N>-``)."""
    while not stop.is_set() and not killed:
        tasks = [int(p.name[5:9]) for p in (root / "output").glob("*/work/status/task-*.jsonl")
                 if image_part in p.read_text()]
        out = subprocess.run(["pgrep", "-u", "sciops", "-f", "ij.jar"], capture_output=True, text=True).stdout
        for pid in out.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            except OSError:
                continue
            if any(f"/sciops-task{t}-" in cmd for t in tasks):
                time.sleep(1.0)   # well inside the slow image
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.2)


def test_sge_faults_killed_jvm_and_a_chunk_that_always_fails(airflow_db, fiji_dag, gridengine, shared_storage,
                                                            make_project):
    counts = {"a1_slow.tif": 4, "a2.tif": 6, "b1.tif": 8, "b2_crash.tif": 3, "c1.tif": 9, "c2.tif": 11}
    root = make_project("faults", counts=counts, size=256)
    (root / "src" / "faulty.ijm").write_text(FAULTY_MACRO)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_jvm_of, args=(root, "a1_slow.", stop, killed), daemon=True)
    killer.start()
    # smoke_test off: the smoke run would also meet the crash image's neighbours
    dr = fiji_dag.test(run_conf=sge_conf("faults", macro="src/faulty.ijm", images_per_task=2, max_attempts=2,
                                         smoke_test=False))
    stop.set()
    assert killed, "the test never found the JVM to kill"
    assert dr.state == "success", task_states(dr)
    run_dir = only_run(root)
    attempts = json.loads((run_dir / "work" / "attempts.json").read_text())
    assert [a["tasks"] for a in attempts] == [[1, 2, 3], [1, 2]]     # only the failed chunks, max 2 attempts
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    failures = pd.read_csv(run_dir / "failures.csv").set_index("image")
    assert sorted(summary.index) == ["a1_slow.tif", "a2.tif", "b1.tif", "c1.tif", "c2.tif"]
    assert summary.loc["a1_slow.tif", "attempt"] == 2                # redone after the kill
    assert summary["count"].astype(int).to_dict() == {k: v for k, v in counts.items() if "crash" not in k}
    assert list(failures.index) == ["b2_crash.tif"]
    assert failures.loc["b2_crash.tif", "status"] == "not_run"
    assert "attempt 2" in failures.loc["b2_crash.tif", "error"]


def wait_for_a_finished_image(root: Path, timeout: float = 120) -> None:
    """Until one image of the project's run has ended ``ok`` (its status line is written)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = list((root / "output").glob("*/work/status/task-*.jsonl"))
        if status and any('"ok"' in p.read_text() for p in status):
            return
        time.sleep(0.3)


def qdel_after_the_first_image(root: Path) -> None:
    """What a person does from outside: qdel the run's jobs once an image has finished."""
    wait_for_a_finished_image(root)
    out = subprocess.run(["su", "-", "sciops", "-c", "qstat -u sciops"], capture_output=True, text=True).stdout
    for job in {line.split()[0] for line in out.splitlines() if "sciops-" in line}:
        subprocess.run(["su", "-", "sciops", "-c", f"qdel {job}"], capture_output=True)


def test_sge_job_deleted_outside_is_reported_and_partial_results_kept(airflow_db, fiji_dag, gridengine,
                                                                      shared_storage, make_project):
    counts = {f"i{k}_slow.tif": 3 + k for k in range(6)}
    root = make_project("deleted", counts=counts, size=128)
    (root / "src" / "faulty.ijm").write_text(FAULTY_MACRO)

    threading.Thread(target=qdel_after_the_first_image, args=(root,), daemon=True).start()
    dr = fiji_dag.test(run_conf=sge_conf("deleted", macro="src/faulty.ijm", images_per_task=3, smoke_test=False))
    assert dr.state == "failed"
    st = task_states(dr)
    assert st["run_array"] == "failed" and st["collate"] == "success" and st["record"] == "success" and st["outcome"] == "failed"
    run_dir = only_run(root)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["failed_phases"] == ["run_array"]
    assert "cancelled outside SciOps" in run["phases"]["run_array"]["error"]
    summary = pd.read_csv(run_dir / "summary.csv")
    failures = pd.read_csv(run_dir / "failures.csv")
    assert len(summary) >= 1                           # what finished before the qdel is kept
    assert len(summary) + len(failures) == len(counts)


def test_sge_node_lost_under_its_tasks_is_resubmitted_without_spending_an_attempt(airflow_db, fiji_dag, gridengine,
                                                                                   shared_storage, make_project):
    """The execution host dies (sge_execd and every task process killed), then comes back: Grid Engine
    reports the tasks ``failed 19``; SciOps resubmits them although max_attempts is 1, and counts the loss."""
    counts = {f"n{k}_slow.tif": 3 + k for k in range(6)}
    root = make_project("nodeloss", counts=counts, size=128)
    (root / "src" / "faulty.ijm").write_text(FAULTY_MACRO)
    testbed = Path(__file__).resolve().parents[2] / "scripts" / "testbed" / "gridengine.sh"
    crashed = []

    def crash_the_node():
        wait_for_a_finished_image(root)
        for argv in (["pkill", "-9", "-x", "sge_execd"], ["pkill", "-9", "-f", "sge_shepherd"],
                     ["pkill", "-9", "-u", "sciops", "-f", "sciops_task.py"]):
            subprocess.run(argv, capture_output=True)
        time.sleep(2)
        crashed.append(time.time())
        subprocess.run(["bash", str(testbed), "start"], capture_output=True, check=True)   # the node is back

    threading.Thread(target=crash_the_node, daemon=True).start()
    dr = fiji_dag.test(run_conf=sge_conf("nodeloss", macro="src/faulty.ijm", images_per_task=3, max_attempts=1,
                                         smoke_test=False, hourly_rate_usd=36.0))
    assert crashed, "the node was never crashed"
    assert dr.state == "success", task_states(dr)
    run_dir = only_run(root)
    attempts = json.loads((run_dir / "work" / "attempts.json").read_text())
    first = attempts[0]["accounting"]
    assert {a["state"] for a in first.values()} == {"lost"} and "failed 19" in first["1"]["reason"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["array"]["node_losses"] == 2 and run["array"]["attempts"] == 2
    summary = pd.read_csv(run_dir / "summary.csv")
    assert sorted(summary["image"]) == sorted(counts) and len(pd.read_csv(run_dir / "failures.csv")) == 0
    assert (summary["attempt"] == 1).any()                      # what finished before the loss was not redone
    assert run["cost"]["lost_node_hours"] > 0


def test_sge_qdel_of_a_one_task_array_is_a_deletion(airflow_db, fiji_dag, gridengine, shared_storage, make_project):
    """qdel of the only task (-notify: the runner stops on SIGUSR2, exit 140): not resubmitted, not a failure."""
    counts = {f"q{k}_slow.tif": 3 + k for k in range(4)}
    root = make_project("onetask", counts=counts, size=128)
    (root / "src" / "faulty.ijm").write_text(FAULTY_MACRO)

    threading.Thread(target=qdel_after_the_first_image, args=(root,), daemon=True).start()
    dr = fiji_dag.test(run_conf=sge_conf("onetask", macro="src/faulty.ijm", images_per_task=4, max_attempts=3,
                                         smoke_test=False, hourly_rate_usd=36.0))
    assert dr.state == "failed" and task_states(dr)["run_array"] == "failed"
    run_dir = only_run(root)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["array"]["attempts"] == 1 and "cancelled outside SciOps" in run["reason"]
    summary = pd.read_csv(run_dir / "summary.csv")
    failures = pd.read_csv(run_dir / "failures.csv")
    assert len(summary) >= 1 and len(summary) + len(failures) == len(counts)
    assert all("qdel" in e for e in failures["error"]), failures["error"].tolist()
    # the runner wrote its end when told (SIGUSR2), so the task's time is in the cost
    summary_file = json.loads((run_dir / "work" / "status" / "task-0001.attempt-1.json").read_text())
    assert summary_file["exit"] == 140 and summary_file["end"] and run["cost"]["total_usd"] > 0


def test_sge_a_chained_array_processes_each_image_exactly_once(airflow_db, fiji_dag, gridengine, shared_storage,
                                                                make_project):
    """Chaining on Grid Engine: the two slots' runners go on with the array's chunks no task has begun in their warm
    JVMs (claims on the shared filesystem); the chunks' own tasks, started when a slot frees, find their images
    done. Every image begins once, ends once, and is in results exactly once."""
    counts = {f"plate/c{k:02d}.tif": 3 + k % 7 for k in range(36)}
    root = make_project("chained", counts=counts, size=128)
    dr = fiji_dag.test(run_conf=sge_conf("chained", images_per_task=4, smoke_test=False))
    assert dr.state == "success", task_states(dr)
    run_dir = only_run(root)
    status = run_dir / "work" / "status"
    lines = [json.loads(line) for p in sorted(status.glob("task-*.jsonl")) for line in p.read_text().splitlines()]
    begins = [r["image"] for r in lines if r["status"] == "begin"]
    ends = [r["image"] for r in lines if r["status"] != "begin"]
    assert sorted(begins) == sorted(ends) == sorted(counts)              # each began and ended exactly once
    attempts = {a["task"]: a for a in (json.loads(p.read_text()) for p in status.glob("task-*.attempt-1.json"))}
    assert sorted(attempts) == list(range(1, 10)) and all(a["exit"] == 0 for a in attempts.values())
    chained = sorted(t for a in attempts.values() for t in a.get("chained") or [])
    assert chained, attempts                                              # some runner went on in its JVM
    assert sum(a["jvm_starts"] for a in attempts.values()) <= 9 - len(chained)
    assert {r.get("by") for r in lines if r["task"] in chained} - {None}  # their lines name the JVM's runner
    summary = pd.read_csv(run_dir / "summary.csv")
    assert sorted(summary["image"]) == sorted(counts) and summary["image"].is_unique
    assert dict(zip(summary["image"], summary["count"].astype(int))) == counts
    assert len(pd.read_csv(run_dir / "failures.csv")) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["array"]["attempts"] == 1
