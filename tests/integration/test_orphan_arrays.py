"""Orphan arrays: a second plan of the same run cancels the array its first plan left running.

The run is validated and planned for real (Grid Engine over SSH through the ``existing`` backend, or
this machine's localq through ``local``); its array is submitted by ``run_array``'s operator, which
defers (the run's first life, then lost: a DAG run killed and replaced by a new one of the same run
id). The array's tasks are a stand-in runner that sleeps (no ImageJ). Then ``plan`` runs again.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from sciops_node.contract import Manifest

RUN_ID = "manual__orphan-test"


class _Store(dict):   # Airflow's task_state_store: the one seam
    def set(self, key, value):
        self[key] = value

    def delete(self, key):
        self.pop(key, None)


def first_life(planned: dict) -> tuple[str, str]:
    """Submit the run's array as run_array does, and lose it (the operator defers; its store is gone with
    the DAG run): ``(job id, plan id)``. Its tasks sleep for minutes."""
    from airflow.sdk.exceptions import TaskDeferred

    from sciops.operators.run_array import STATE_KEY, FijiArrayOperator

    manifest = Manifest.load(planned["manifest"])
    Path(manifest.work_dir, "job", "sciops_task.py").write_text("import time\ntime.sleep(600)\n")
    store = _Store()
    with pytest.raises(TaskDeferred):
        FijiArrayOperator(task_id="run_array", manifest_path=planned["manifest"], worker_wait_seconds=0).execute(
            {"task_state_store": store})
    return store[STATE_KEY]["job_id"], manifest.plan_id


def sge_queue() -> set[str]:
    out = subprocess.run(["su", "-", "sciops", "-c", "qstat -u '*'"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()[2:] if line.strip()}


def check_recorded(run_dir: Path, job_id: str, plan_id: str, again: dict) -> None:
    """The second plan cancelled ``job_id`` and said so: its answer, work/orphans.json, its phase record."""
    assert again["orphans_cancelled"] == [job_id]
    assert Manifest.load(again["manifest"]).plan_id != plan_id
    [rec] = json.loads((run_dir / "work" / "orphans.json").read_text())
    assert rec["job_id"] == job_id and rec["plan_id"] == plan_id and rec["attempt"] == 1
    assert rec["name"] == f"sciops-{RUN_ID}-{plan_id}-a1" and rec["left_queue"] is True
    assert "superseded" in rec["why"]
    phase = json.loads((run_dir / "work" / "phases" / "plan.json").read_text())
    assert phase["status"] == "success" and [j["job_id"] for j in phase["orphans_cancelled"]] == [job_id]


def test_a_second_plan_on_grid_engine_cancels_the_first_plans_array(airflow_db, gridengine, shared_storage,
                                                                     make_project, job_dir):
    from sciops.arrays.ssh import SSHRunner
    from sciops.arrays.schedulers.base import ArraySpec
    from sciops.arrays.schedulers.sge import SGEScheduler
    from sciops.phases.checks import validate
    from sciops.phases.plan import plan

    make_project("orphans", counts={f"i{k}.tif": 3 + k for k in range(4)}, size=64)
    info = validate({"project": "orphans", "backend": "existing", "scheduler": "sge", "ssh_conn_id": "sciops_cluster",
                     "memory": "1G", "images_per_task": 1, "smoke_test": False}, RUN_ID)
    run_dir = Path(info.run_dir)
    job_id, plan_id = first_life(plan(info))
    runner, sched = SSHRunner(gridengine), SGEScheduler()
    # a job named as the run's but working in another folder: another deployment's run of the same id
    other = sched.submit(runner, ArraySpec(name=f"sciops-{RUN_ID}-0badc0de-a1", command=["sleep", "600"],
                                           task_ids=[1], log_dir=f"{job_dir}/logs", workdir=job_dir))
    try:
        assert job_id in sge_queue() and other in sge_queue()

        again = plan(info)   # the DAG run replaced by a new one of the same run id: plan runs again

        assert job_id not in sge_queue()                 # cancelled, and gone from the queue
        assert other in sge_queue()                      # not this run folder's: left alone
        check_recorded(run_dir, job_id, plan_id, again)
        sched.cancel(runner, job_id)                     # cancelling it again is harmless
        assert plan(info)["orphans_cancelled"] == []     # nothing of the run is left to cancel
    finally:
        sched.cancel(runner, other)
        runner.close()


def test_a_second_plan_on_the_local_backend_cancels_the_first_plans_array(airflow_db, storage, make_project):
    from sciops.arrays.commands import LocalRunner
    from sciops.arrays.schedulers.local import LocalScheduler
    from sciops.phases.checks import validate
    from sciops.phases.plan import plan

    make_project("orphans", counts={f"i{k}.tif": 3 + k for k in range(3)}, size=64)
    info = validate({"project": "orphans", "images_per_task": 1, "slots": 2, "smoke_test": False}, RUN_ID)
    run_dir = Path(info.run_dir)
    job_id, plan_id = first_life(plan(info))
    sched, runner = LocalScheduler(spool=str(run_dir / "work" / "jobs")), LocalRunner()
    deadline = time.time() + 30
    while "running" not in sched.status(runner, job_id, [1, 2, 3]).values() and time.time() < deadline:
        time.sleep(0.2)

    again = plan(info)

    states = sched.status(runner, job_id, [1, 2, 3])
    assert {s.value for s in states.values()} == {"cancelled"}, states   # none ran on, none was left to start
    check_recorded(run_dir, job_id, plan_id, again)
