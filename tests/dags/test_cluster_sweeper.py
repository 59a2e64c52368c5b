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


def test_sweeper_deletes_orphans_and_keeps_running_runs(airflow_db, fake_pcluster, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SCIOPS_PCLUSTER_REGIONS", "us-east-1")
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
