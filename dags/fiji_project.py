"""
### fiji_project: run a Fiji/ImageJ macro over every image of a project

One run = one project. `validate` checks every parameter (and smoke-runs the macro
on a few images) before anything is spent; `plan` cuts the images into chunks of
`images_per_task`; `run_array` runs them as one array job (one JVM per chunk) and
resubmits failed chunks up to `max_attempts`; `collate` writes `results.csv`,
`summary.csv` and `failures.csv`; `record` writes `run.json`, failed runs included.

Everything lands in `<storage root>/<project>/output/<run_id>/`.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from sciops.operators.run_array import FijiArrayOperator

COLLATED = Asset("sciops://collated-results")


def _nullable(kind: str, description: str, **schema) -> Param:
    # null = "take it from project.yaml, else the built-in default" (see sciops.config.DEFAULTS)
    return Param(None, type=["null", kind], description=description, **schema)


@dag(
    dag_id="fiji_project",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["sciops", "imagej"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    max_active_tasks=4,
    params={
        "project": Param("", type="string", description="Project folder under the storage root", minLength=1),
        "macro": _nullable("string", "Shipped macro name (count_nuclei) or a file in the project, e.g. src/x.ijm"),
        "macro_args": _nullable("object", "key: value arguments handed to the macro"),
        "file_pattern": _nullable("string", "Comma-separated globs under input/, e.g. *.tif,*.png"),
        "images_per_task": _nullable("integer", "Images per array task (one JVM each)"),
        "max_attempts": _nullable("integer", "Submissions of a failed chunk, the first included"),
        "image_timeout_s": _nullable("integer", "Seconds one image may take before it is killed"),
        "stall_seconds": _nullable("integer", "Idle seconds after which a JVM counts as hung on a dialog"),
        "memory": _nullable("string", "Memory per task, e.g. 2G (the JVM heap is derived from it)"),
        "backend": _nullable("string", "Where the array runs: local (this machine) or existing (a cluster over SSH)",
                             enum=[None, "local", "existing"]),
        "scheduler": _nullable("string", "existing backend: the cluster's scheduler", enum=[None, "sge", "slurm"]),
        "ssh_conn_id": _nullable("string", "existing backend: Airflow SSH connection of the head node"),
        "queue": _nullable("string", "existing backend: queue (SGE -q) or partition (Slurm)"),
        "accounting_project": _nullable("string", "existing backend: accounting project (SGE -P) or account (Slurm)"),
        "memory_resource": _nullable("string", "existing backend: memory complex to request, e.g. h_vmem"),
        "exclusive": _nullable("boolean", "existing backend: one task per node (-l exclusive=true)"),
        "one_per_host": _nullable("boolean", "existing backend: one ImageJ per node (SGE -l fiji=1, Slurm --gres=fiji:1)"),
        "cluster_python": _nullable("string", "existing backend: Python 3 on the compute nodes"),
        "cluster_storage_root": _nullable("string", "existing backend: the storage root's path on the cluster"),
        "slots": _nullable("integer", "local backend: tasks at once (0 = one per CPU)"),
        "launcher": _nullable("string", "ImageJ launcher", enum=[None, "auto", "imagej1", "fiji"]),
        "smoke_test": _nullable("boolean", "Run the macro on a few images in validate first"),
    },
)
def fiji_project():
    @task(retries=0)  # a bad parameter does not fix itself
    def validate() -> dict:
        from sciops.pipeline import validate as run_validate

        ctx = get_current_context()
        conf = {**ctx["params"], **(ctx["dag_run"].conf or {})}
        # published early so that record finds the run folder even if the smoke run fails
        return run_validate(conf, ctx["run_id"], publish=lambda info: ctx["ti"].xcom_push("run_info", info))

    @task
    def plan(info: dict) -> dict:
        from sciops.pipeline import plan as run_plan

        return run_plan(info)

    # all_done: a run_array that failed (every chunk failed, job deleted outside) still has
    # finished images on disk, and collate gathers them; record then marks the run failed.
    @task(outlets=[COLLATED], trigger_rule="all_done")
    def collate(info: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from sciops.pipeline import collate as run_collate

        planned = get_current_context()["ti"].xcom_pull(task_ids="plan")
        if not planned:
            raise AirflowSkipException("nothing was planned: nothing to collate")
        return run_collate(info, planned["manifest"])

    @task(trigger_rule="all_done", retries=0)
    def record() -> dict:
        from sciops.pipeline import record as run_record

        ctx = get_current_context()
        ti = ctx["ti"]
        return run_record(ti.xcom_pull(task_ids="validate", key="run_info"), ti.xcom_pull(task_ids="collate"),
                          ctx["dag"].dag_id, getattr(ctx["dag_run"].run_type, "value", None))

    info = validate()
    planned = plan(info)
    run_array = FijiArrayOperator(
        task_id="run_array",
        manifest_path="{{ ti.xcom_pull(task_ids='plan')['manifest'] }}",
        execution_timeout=timedelta(hours=48),
    )
    planned >> run_array >> collate(info) >> record()


fiji_project()
