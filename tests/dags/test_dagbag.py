"""DAG integrity: imports cleanly and fast, has tags, retries and the documented shape."""
from __future__ import annotations

import time

import pytest

from helpers import REPO, REPORT


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    REPORT["DAG folder parse time"] = f"{time.perf_counter() - t0:.3f} s for {len(bag.dags)} DAG(s)"
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "fiji_project" in dagbag.dags


def test_tags_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries set"


def test_fiji_project_shape(dagbag):
    dag = dagbag.dags["fiji_project"]
    # one task per hop that must wait for the one before: each costs a scheduler hop and a process start, so
    # the storage steps share the task they follow or precede (sync_up → validate, stage_in → plan,
    # stage_out and sync_down → deliver), each still its own phase record
    assert not {"sync_up", "stage_in", "stage_out", "sync_down"} & set(dag.task_ids)
    order = ["validate", "plan", "run_array", "collate", "deliver", "record", "outcome"]
    for up, down in zip(order, order[1:]):
        assert down in dag.get_task(up).downstream_task_ids or up == "validate", f"{up} -> {down}"
    assert "plan" in dag.get_task("validate").downstream_task_ids
    # failures must not lose results
    for name in ("collate", "deliver", "record", "outcome"):
        assert dag.get_task(name).trigger_rule == "all_done", name
    # the cluster: made after validate by the setup, deleted by its teardown after collate, whatever failed
    # (all_done: a failed create leaves a cluster to delete), failing the run if it fails
    create = dag.get_task("create_cluster")
    assert "create_cluster" in dag.get_task("validate").downstream_task_ids and create.is_setup
    assert create.downstream_task_ids == {"plan", "delete_cluster"}
    delete = dag.get_task("delete_cluster")
    assert delete.is_teardown and delete.on_failure_fail_dagrun and delete.trigger_rule == "all_done"
    # state passes as arguments (XComArgs), not by pulls of hard-coded task ids
    assert create.run_info.operator.task_id == "validate" and delete.run_info.operator.task_id == "validate"
    assert {"create_cluster", "collate"} <= delete.upstream_task_ids and "record" in delete.downstream_task_ids
    assert dag.get_task("validate").retries == 0
    assert {"project", "macro", "images_per_task", "max_attempts", "image_timeout_s", "memory",
            "backend", "file_pattern", "macro_args", "storage_root", "aws_conn_id", "sync_from",
            "sync_to"} <= set(dag.params)


def test_fiji_nightly_shape(dagbag):
    dag = dagbag.dags["fiji_nightly"]
    assert dag.schedule == "0 2 * * *" and dag.max_active_runs == 1 and not dag.catchup
    start = dag.get_task("start_runs")
    assert start.upstream_task_ids == {"scan"} and start.partial_kwargs["trigger_dag_id"] == "fiji_project"
    assert start.partial_kwargs["wait_for_completion"] and start.partial_kwargs["deferrable"]
    assert [o.uri for o in dagbag.dags["fiji_project"].get_task("record").outlets] == ["x-sciops://latest-results"]


@pytest.mark.parametrize("dag_file", ["fiji_project.py", "cluster_sweeper.py", "fiji_nightly.py"])
def test_dag_file_has_no_heavy_imports_at_parse_time(dag_file):
    """The DAG processor parses these files every 30 s: no pandas, no AWS SDK, no task code.

    (An Asset with a scheme Airflow does not know, e.g. ``sciops://``, makes it load every provider's
    URI handlers, the Amazon provider's S3 hook and boto3 among them: ours is ``x-sciops://``.)
    ``sciops.run.config`` is allowed: the form's Params are generated from it, and it costs ~10 ms
    on top of ``airflow.sdk`` (pydantic is already loaded); it must not pull the rest in. So are
    the backend classes it takes the backends' names, schedulers and form sections from (the
    registry, ``sciops.clusters``): what they do with a run (SSH, schedulers, pcluster, costs) is
    imported when they do it.
    """
    import subprocess
    import sys

    heavy = ("pandas", "pyarrow", "boto3", "botocore", "paramiko", "asyncssh", "sciops.phases", "sciops.reporting.collate",
             "sciops.storage.root", "sciops.storage.sync", "sciops.run.runinfo", "sciops.arrays.commands",
             "sciops.arrays.ssh", "sciops.arrays.schedulers", "sciops.clusters.parallelcluster.settings",
             "sciops.clusters.parallelcluster.cli", "sciops.accounting.costs", "sciops.imaging.imagej")
    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" / dag_file)], capture_output=True,
                         text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO / "plugins")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
