"""
### fiji_project: run a Fiji/ImageJ macro over every image of a project

One run = one project. `sync_up` sends a LAN project folder (`sync_from`) to the storage
root; `validate` checks every parameter (and smoke-runs the macro on a few images) before
anything is spent; `stage_in` copies the project from an S3 storage root to the run's
working copy (on the cluster's head node for `existing`); `plan` cuts the images into
chunks of `images_per_task`; `run_array` runs them as one array job (one JVM per chunk)
and resubmits failed chunks up to `max_attempts`; `collate` writes `results.csv`,
`summary.csv` and `failures.csv`; `stage_out` pushes the run folder back to S3;
`sync_down` copies it to the LAN folder (`sync_to`, else `sync_from`); `record` writes
`run.json`, failed runs included. Storage steps with nothing to do are skipped.

With `backend: parallelcluster`, `create_cluster` makes an AWS ParallelCluster 3 (Slurm)
for the run after `validate` (which dry-runs pcluster's own validators first) and
`delete_cluster`, a teardown, deletes it after `collate` whatever failed.

Everything lands in `<storage root>/<project>/output/<run_id>/`.

**The form**: every field shows its built-in default. A field left at its default takes
the project's `project.yaml` value when that file sets one; a field you change wins.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from sciops.config import form_params
from sciops.operators.cluster import PClusterCreateOperator, PClusterDeleteOperator
from sciops.operators.run_array import FijiArrayOperator

COLLATED = Asset("x-sciops://collated-results")  # x-: a custom scheme, no provider lookup at parse time


def _params() -> dict[str, Param]:
    # Declared once, in sciops.config.RunConfig: defaults, bounds, enums, form sections and
    # the rule "a field left at its default takes project.yaml's value".
    return {name: Param(default, **schema) for name, (default, schema) in form_params().items()}


@dag(
    dag_id="fiji_project",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["sciops", "imagej"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    max_active_tasks=4,
    params=_params(),
)
def fiji_project():
    from airflow.sdk.exceptions import AirflowSkipException

    def skip_if_none(result, why: str):
        if result is None:
            raise AirflowSkipException(why)
        return result

    def run_conf() -> dict:
        ctx = get_current_context()
        return {**ctx["params"], **(ctx["dag_run"].conf or {})}

    def refusals():
        from sciops.pipeline import refusals as pipeline_refusals

        ctx = get_current_context()  # a refused run gets a ledger row (status refused, the reason)
        return pipeline_refusals(run_conf(), ctx["run_id"], ctx["dag"].dag_id,
                                 getattr(ctx["dag_run"].run_type, "value", None))

    @task(retries=0)  # a bad parameter does not fix itself
    def sync_up() -> dict:
        from sciops.pipeline import sync_up as run_sync_up

        with refusals():
            return skip_if_none(run_sync_up(run_conf()), "no sync_from: the project is already in the storage root")

    @task(retries=0, trigger_rule="none_failed")  # runs after a skipped sync_up
    def validate() -> dict:
        from sciops.notify import run_started
        from sciops.pipeline import validate as run_validate

        ctx = get_current_context()
        # published early so that record finds the run folder even if the smoke run fails
        with refusals():
            info = run_validate(run_conf(), ctx["run_id"],
                                publish=lambda info: ctx["ti"].xcom_push("run_info", info))
        run_started(info)
        return info

    def cluster():
        return get_current_context()["ti"].xcom_pull(task_ids="create_cluster")

    @task(trigger_rule="none_failed")  # runs after a skipped create_cluster
    def stage_in(info: dict) -> dict:
        from sciops.pipeline import stage_in as run_stage_in

        return skip_if_none(run_stage_in(info, cluster()),
                            "the storage root is a local folder: runs work in it directly")

    @task(trigger_rule="none_failed")  # runs after a skipped stage_in
    def plan(info: dict) -> dict:
        from sciops.pipeline import plan as run_plan

        return run_plan(info, cluster())

    # all_done: a run_array that failed (every chunk failed, job deleted outside) still has
    # finished images on disk, and collate gathers them; record then marks the run failed.
    @task(outlets=[COLLATED], trigger_rule="all_done")
    def collate(info: dict) -> dict:
        from sciops.pipeline import collate as run_collate

        planned = get_current_context()["ti"].xcom_pull(task_ids="plan")
        if not planned:
            raise AirflowSkipException("nothing was planned: nothing to collate")
        return run_collate(info, planned["manifest"], cluster())

    def run_info():
        return get_current_context()["ti"].xcom_pull(task_ids="validate", key="run_info")

    @task(trigger_rule="all_done")  # partial results are pushed too: nothing is lost
    def stage_out() -> dict:
        from sciops.pipeline import stage_out as run_stage_out

        return skip_if_none(run_stage_out(run_info()), "nothing to push: local storage root, or no run folder")

    @task(trigger_rule="all_done")
    def sync_down() -> dict:
        from sciops.pipeline import sync_down as run_sync_down

        return skip_if_none(run_sync_down(run_info()), "no sync_to or sync_from: results stay in the storage root")

    @task(trigger_rule="all_done", retries=0)
    def record() -> dict:
        from sciops.pipeline import record as run_record

        ctx = get_current_context()
        ti = ctx["ti"]
        return run_record(run_info(), ti.xcom_pull(task_ids="collate"), ctx["dag"].dag_id,
                          getattr(ctx["dag_run"].run_type, "value", None), ti.xcom_pull(task_ids="sync_up"))

    info = validate()
    sync_up() >> info
    create = PClusterCreateOperator(task_id="create_cluster", execution_timeout=timedelta(hours=2))
    staged = stage_in(info)
    info >> create >> staged
    planned = plan(info)
    staged >> planned
    run_array = FijiArrayOperator(
        task_id="run_array",
        manifest_path="{{ ti.xcom_pull(task_ids='plan')['manifest'] }}",
        timeout=timedelta(hours=48),  # the whole array phase, deferrals included (one limit, see the operator)
    )
    collated = collate(info)
    planned >> run_array >> collated
    # The teardown runs once everything that needs the cluster is done, whatever failed (a
    # failed create_cluster included: a CREATE_FAILED cluster still exists); its own failure
    # fails the run (a cluster left running costs money) and alerts. create_cluster is not
    # marked a setup: Airflow would then require all_success after it, and it skips itself
    # on other backends.
    delete = PClusterDeleteOperator(task_id="delete_cluster", execution_timeout=timedelta(hours=2))
    [create, collated] >> delete.as_teardown(on_failure_fail_dagrun=True)
    ended = record()
    collated >> stage_out() >> sync_down() >> ended
    delete >> ended


fiji_project()
