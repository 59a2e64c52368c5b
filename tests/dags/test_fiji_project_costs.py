"""Cost, ledger, budget, report and Slack, on real runs (local processes and Grid Engine over SSH)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers import fresh_dag, task_states, wrapping_macro

pytestmark = pytest.mark.imagej

CRASH = wrapping_macro('exec("sh", "-c", "kill -9 $(ps -o ppid= $PPID) $PPID");')
SLOW = wrapping_macro('if (indexOf(input, "z_slow") >= 0) wait(30000);')


def only_run(root: Path, newest: bool = True) -> Path:
    runs = sorted((p for p in (root / "output").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return runs[-1] if newest else runs[0]


def test_ledger_slack_and_cost_for_a_successful_and_a_failed_run(airflow_db, make_project, slack_receiver, monkeypatch):
    from sciops.accounting import ledger
    from sciops.errors import ConfigError
    from sciops.phases.checks import validate

    root = make_project("costs", counts={"a.tif": 3, "b.tif": 5, "c.tif": 7})
    (root / "src" / "crash.ijm").write_text(CRASH)
    conf = {"project": "costs", "memory": "1G", "images_per_task": 2, "hourly_rate_usd": 36.0}
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "success", task_states(dr)
    run = json.loads((only_run(root) / "run.json").read_text())
    # 36 USD per task-hour = 0.01 USD per task-second, over the runners' own start/end times
    task_s = sum(t["end"] - t["start"] for t in map(json.loads, map(Path.read_text, (
        only_run(root) / "work" / "status").glob("task-*.attempt-*.json"))))
    assert run["cost"]["total_usd"] == pytest.approx(task_s * 0.01, rel=1e-3)
    assert run["cost_per_image_usd"] == pytest.approx(run["cost"]["total_usd"] / 3, rel=1e-3)
    timing = run["array"]["timing"][0]
    assert timing["queue_wait_s"] >= 0 and timing["compute_s"] > 0 and not timing["resubmit"]
    assert run["trigger"] == "UI/API"

    monkeypatch.setenv("SCIOPS_MACRO_SANDBOX", "off")   # CRASH kills its JVM through exec("sh"): no shell in the sandbox
    dr = fresh_dag().test(run_conf={**conf, "macro": "src/crash.ijm", "max_attempts": 1, "smoke_test": False})
    assert dr.state == "failed"
    rows = {r["status"]: r for r in ledger.rows(project="costs")}
    assert set(rows) == {"success", "failed"}
    ok = rows["success"]
    assert ok["images_ok"] == 3 and ok["cost_usd"] == pytest.approx(run["cost"]["total_usd"])
    assert ok["seconds_per_image"] > 0 and ok["macro"] == "count_nuclei" and ok["trigger"] == "UI/API"
    assert json.loads(ok["phases"])["run_array"]["status"] == "success"
    assert rows["failed"]["images_ok"] == 0 and rows["failed"]["images_failed"] == 3

    texts = [p["json"]["text"] for p in slack_receiver]
    assert len(texts) == 4, texts  # start and end of each run
    assert "started" in texts[0] and "*costs*" in texts[0] and "3 images" in texts[0] and "local" in texts[0]
    end = texts[1]
    assert "success" in end and "images ok 3, failed 0 of 3" in end and "USD per image" in end
    assert f"/sciops/runs/fiji_project/{run['airflow_run_id']}/report" in end and "duration" in end
    assert "failed" in texts[3] and "images ok 0, failed 3 of 3" in texts[3]

    # before anything runs: the same macro's past run says this would cost more than the budget
    with pytest.raises(ConfigError) as err:
        validate({**conf, "budget_usd": 0.0001}, "manual__over-budget")
    assert err.value.fields == ["budget_usd"] and "estimated" in str(err.value) and "1 past run" in str(err.value)


@pytest.mark.parametrize("scheduler, watcher", [("sge", "triggerer"), ("sge", "worker"), ("slurm", "triggerer")])
def test_budget_abort(airflow_db, slurm, shared_storage, make_project, monkeypatch, scheduler, watcher):
    """A small budget at a high rate: the job is cancelled before the spend can pass the cap, and the cap
    holds on the recorded cost (the tasks' own times), not only on the watch's estimate.

    Both waits obey the cap (one pure watch, sciops.arrays.watch): the triggerer's (the array defers at
    once) and the worker's (it watches the whole array, as deferrable=False does).
    """
    project = f"budget-{scheduler}-{watcher}"
    monkeypatch.setenv("SCIOPS_WORKER_WAIT_SECONDS", "0" if watcher == "triggerer" else "600")
    counts = {"a1.tif": 2, "a2.tif": 3, "a3.tif": 4, "a4.tif": 5, "z_slow1.tif": 6, "z_slow2.tif": 7,
              "z_slow3.tif": 8, "z_slow4.tif": 9}
    root = make_project(project, counts=counts)
    (root / "src" / "slow.ijm").write_text(SLOW)
    budget = 40.0
    conf = {"project": project, "backend": "existing", "scheduler": scheduler, "ssh_conn_id": "sciops_cluster",
            "memory": "1G", "stall_seconds": 60, "image_timeout_s": 120, "macro": "src/slow.ijm",
            "images_per_task": 2, "hourly_rate_usd": 3600.0, "budget_usd": budget}
    dr = fresh_dag().test(run_conf=conf)
    states = task_states(dr)
    assert dr.state == "failed" and states["run_array"] == "failed", states
    assert states["collate"] == states["record"] == "success" and states["outcome"] == "failed"
    run_dir = only_run(root)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "budget exceeded"
    abort = run["budget"]["abort"]
    # cancelled while the spend was under the cap, because one more poll and the stop would have passed it
    assert abort["spent_usd"] <= budget < abort["projected_usd"]
    # the recorded cost (the runners' start/end, written when qdel/scancel told them) holds the cap
    assert 0 < run["cost"]["total_usd"] <= budget, run["cost"]
    assert run["array"]["attempts"] == 1 and run["array"]["job_ids"] == [abort["job_id"]]
    attempts = json.loads((run_dir / "work" / "attempts.json").read_text())
    assert "budget" in attempts[0]["cancelled"]
    # cancelled for real: the job leaves the queue
    import time

    deadline = time.time() + 60
    env = {"SGE_ROOT": "/var/lib/gridengine", "PATH": "/usr/bin:/bin"}
    while True:
        if scheduler == "sge":   # qdel'd tasks show "dr" while their shells die
            out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, env=env).stdout
            mine = [line for line in out.splitlines() if line.split()[:1] == [abort["job_id"]]]
        else:
            out = subprocess.run(["squeue", "-h", f"--jobs={abort['job_id']}", "-o", "%i|%T"], capture_output=True,
                                 text=True).stdout
            mine = [line for line in out.splitlines() if line.strip()]
        if not mine or time.time() > deadline:
            break
        time.sleep(1)
    assert not mine, mine
    # the images that finished before the cap are in the results, the rest in failures, saying why
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    assert {"a1.tif", "a2.tif", "a3.tif", "a4.tif"} <= set(summary.index)
    failures = pd.read_csv(run_dir / "failures.csv").set_index("image")
    assert set(failures.index) <= {"z_slow1.tif", "z_slow2.tif", "z_slow3.tif", "z_slow4.tif"}
    assert set(summary.index) | set(failures.index) == set(counts)
    assert all("budget" in e for e in failures["error"]), failures["error"].tolist()
    from sciops.accounting import ledger

    [row] = ledger.rows(project=project)
    assert row["cost_usd"] == pytest.approx(run["cost"]["total_usd"])
