"""The cluster_sweeper DAG end to end (dag.test), at the pcluster command boundary."""
from __future__ import annotations

import datetime as dt

import yaml

from helpers import REPO
from sciops.clusters import parallelcluster as pc

BASE = dict(region="us-east-1", subnet_id="subnet-0123456789abcdef0", key_name="lab-key",
            custom_ami="ami-0123456789abcdef0")


def make(cli, tmp_path, run_id, dag_id):
    settings, _ = pc.settings_from(BASE, bucket="imaging", run_id=run_id, project="cells", dag_id=dag_id)
    path = tmp_path / f"{abs(hash(run_id))}.yaml"
    path.write_text(yaml.safe_dump(pc.build_config(settings)))
    name = pc.cluster_name(run_id)
    cli.create(name, str(path))
    return name


def test_sweeper_deletes_orphans_and_keeps_running_runs(airflow_db, fake_pcluster, storage, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SCIOPS_PCLUSTER_REGIONS", "us-east-1")
    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(tmp_path / "work-root"))   # the array sweep looks here too
    cli = pc.PCluster("us-east-1")
    # The sweeper's own DAG run is "running" while it sweeps: a cluster tagged with it must stay.
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    live = make(cli, tmp_path, f"manual__{when.isoformat()}", "cluster_sweeper")
    orphan = make(cli, tmp_path, "manual__2025-12-31T00:00:00+00:00", "fiji_project")  # no such run
    dag = DagBag(dag_folder=str(REPO / "dags" / "cluster_sweeper.py")).dags["cluster_sweeper"]

    dr = dag.test(run_after=when - dt.timedelta(days=1), logical_date=when - dt.timedelta(days=1),
                  run_conf={"dry_run": True})
    assert dr.state == "success"
    assert all(c["status"] != "DELETE_IN_PROGRESS" for c in fake_pcluster.state()["clusters"].values())

    dr = dag.test(run_after=when, logical_date=when, run_conf={"dry_run": False})
    assert dr.state == "success"
    assert dr.run_id == f"manual__{when.isoformat()}", dr.run_id
    clusters = fake_pcluster.state()["clusters"]
    assert clusters[orphan]["status"] == "DELETE_IN_PROGRESS"
    assert clusters[live]["status"] != "DELETE_IN_PROGRESS"
    result = dr.get_task_instance("sweep").xcom_pull(task_ids="sweep")
    assert [r["name"] for r in result["us-east-1"]["deleted"]] == [orphan]
    assert [r["name"] for r in result["us-east-1"]["kept"]] == [live]


def array_of_run(root, run_id: str, airflow_run_id: str, dag_id: str) -> str:
    """A planned run folder (local backend) whose run_array phase says running, and its array: sleeping tasks
    in localq, named as SciOps names them. The job id."""
    from sciops.arrays.commands import LocalRunner
    from sciops.arrays.schedulers.base import ArraySpec
    from sciops.arrays.schedulers.local import LocalScheduler
    from sciops.phases import phase_start
    from sciops.run.project import write_json

    run_dir = root / "proj" / "output" / run_id
    work = run_dir / "work"
    write_json(work / "manifest.json", {
        "run_id": run_id, "run_dir": str(run_dir), "work_dir": str(work), "chunks": [["a.tif"], ["b.tif"]],
        "backend": "local", "backend_options": {"slots": 2}, "plan_id": "aaaa1111",
        "airflow_run_id": airflow_run_id, "dag_id": dag_id})
    phase_start(run_dir, "run_array")
    return LocalScheduler(spool=str(work / "jobs")).submit(LocalRunner(), ArraySpec(
        name=f"sciops-{run_id}-aaaa1111-a1", command=["sleep", "600"], task_ids=[1, 2], log_dir=str(run_dir / "logs"),
        workdir=str(work)))


def states(root, run_id: str, job_id: str) -> set[str]:
    from sciops.arrays.commands import LocalRunner
    from sciops.arrays.schedulers.local import LocalScheduler

    sched = LocalScheduler(spool=str(root / "proj" / "output" / run_id / "work" / "jobs"))
    return {s.value for s in sched.status(LocalRunner(), job_id, [1, 2]).values()}


def test_sweeper_cancels_the_arrays_of_runs_that_are_over(airflow_db, storage, tmp_path, monkeypatch):
    """A run folder whose run_array phase says running while its DAG run is gone: its array is cancelled,
    recorded in work/orphans.json and the phase ended; the array of a run that goes on is kept."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("SCIOPS_PCLUSTER_REGIONS", raising=False)         # no clusters to sweep: that task skips
    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(tmp_path / "work-root"))
    when = dt.datetime(2026, 1, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    gone = array_of_run(storage, "r-gone", "manual__2025-12-31T00:00:00+00:00", "fiji_project")  # no such run
    # the sweeper's own DAG run is running while it sweeps: a run folder naming it goes on
    live = array_of_run(storage, "r-live", f"manual__{when.isoformat()}", "cluster_sweeper")
    dag = DagBag(dag_folder=str(REPO / "dags" / "cluster_sweeper.py")).dags["cluster_sweeper"]
    try:
        dr = dag.test(run_after=when - dt.timedelta(days=1), logical_date=when - dt.timedelta(days=1),
                      run_conf={"dry_run": True})
        assert dr.state == "success"
        dry = dr.get_task_instance("sweep_arrays").xcom_pull(task_ids="sweep_arrays")
        assert sorted(r["run_id"] for r in dry["would_cancel"]) == ["r-gone", "r-live"]
        assert "running" in states(storage, "r-gone", gone) and "running" in states(storage, "r-live", live)

        dr = dag.test(run_after=when, logical_date=when, run_conf={"dry_run": False})
        assert dr.state == "success"
        result = dr.get_task_instance("sweep_arrays").xcom_pull(task_ids="sweep_arrays")
        assert [(r["run_id"], [j["job_id"] for j in r["jobs"]]) for r in result["cancelled"]] == [("r-gone", [gone])]
        assert [r["run_id"] for r in result["kept"]] == ["r-live"] and result["errors"] == []
        assert states(storage, "r-gone", gone) == {"cancelled"}
        assert "running" in states(storage, "r-live", live)
        work = storage / "proj" / "output" / "r-gone" / "work"
        [rec] = json.loads((work / "orphans.json").read_text())
        assert rec["job_id"] == gone and "fiji_project/manual__2025-12-31T00:00:00+00:00 is over" in rec["why"]
        phase = json.loads((work / "phases" / "run_array.json").read_text())
        assert phase["status"] == "failed" and "orphaned array" in phase["error"] and gone in phase["error"]
        # the next sweep leaves the ended run alone; the other's DAG run is over by now: its array goes
        dr = dag.test(run_after=when + dt.timedelta(hours=1), logical_date=when + dt.timedelta(hours=1))
        again = dr.get_task_instance("sweep_arrays").xcom_pull(task_ids="sweep_arrays")
        assert [r["run_id"] for r in again["cancelled"]] == ["r-live"] and again["kept"] == again["ended"] == []
        assert states(storage, "r-live", live) == {"cancelled"}
    finally:
        from sciops.arrays.commands import LocalRunner
        from sciops.arrays.schedulers.local import LocalScheduler

        for run_id, job in (("r-gone", gone), ("r-live", live)):
            LocalScheduler(spool=str(storage / "proj" / "output" / run_id / "work" / "jobs")).cancel(LocalRunner(), job)
