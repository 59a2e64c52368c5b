"""
### fiji_project: run a Fiji/ImageJ macro over every image of a project

One run = one project. `validate` first sends a LAN project folder (`sync_from`) to the
storage root, then checks every parameter (and smoke-runs the macro on a few images) before
anything is spent; `plan` copies the project from an S3 storage root to the run's working copy
(on the cluster's head node for `existing`), then cuts the images into chunks of
`images_per_task`; `run_array` runs them as one array job (one JVM per chunk) and resubmits
failed chunks up to `max_attempts`; `collate` writes `results.csv`, `summary.csv` and
`failures.csv`; `deliver` pushes the run folder back to S3 and copies it to the LAN folder
(`sync_to`, else `sync_from`); `record` writes `run.json`, failed runs included, adds the images
processed to the project's index (what `only_new` leaves out) and its latest-results table (Asset
`x-sciops://latest-results`, whose event names the project and the table), with one verdict for
run.json, the report, the ledger and Slack; `outcome` fails the run exactly when that verdict is
not success. A task that has a storage step with nothing to do says so in its log. Each step
(`sync_up`, `stage_in`, `stage_out`, `sync_down`) keeps its own phase record in run.json: the
tasks are fewer than the steps because every task costs a scheduler hop and a process start.

With `backend: parallelcluster`, `create_cluster` (the setup) makes an AWS ParallelCluster 3
(Slurm) for the run after `validate` (which dry-runs pcluster's own validators first) and
`delete_cluster`, its teardown, deletes it after `collate` whatever failed.

Everything lands in `<storage root>/<project>/output/<run_id>/`.

**The form**: every field shows its built-in default. A field left at its default takes
the project's `project.yaml` value when that file sets one; a field you change wins.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from sciops.run.form import form_params
from sciops.operators.cluster import PClusterCreateOperator, PClusterDeleteOperator
from sciops.operators.run_array import FijiArrayOperator

COLLATED = Asset("x-sciops://collated-results")  # x-: a custom scheme, no provider lookup at parse time
#: A project's table of every run's results, the newest per image; its events say which project and where.
LATEST_RESULTS = Asset("x-sciops://latest-results")


def _params() -> dict[str, Param]:
    # Declared once, in sciops.run.config.RunConfig: defaults, bounds, enums, form sections and
    # the rule "a field left at its default takes project.yaml's value" (sciops.run.form: the Params).
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
    import logging

    from airflow.sdk.exceptions import AirflowSkipException

    log = logging.getLogger("sciops.dag")

    def skip_if_none(result, why: str):
        if result is None:
            raise AirflowSkipException(why)
        return result

    def run_conf() -> dict:
        ctx = get_current_context()
        return {**ctx["params"], **(ctx["dag_run"].conf or {})}

    def refusals():
        from sciops.phases.checks import refusals as checks_refusals

        ctx = get_current_context()  # a refused run gets a ledger row (status refused, the reason)
        return checks_refusals(run_conf(), ctx["run_id"], ctx["dag"].dag_id,
                                 getattr(ctx["dag_run"].run_type, "value", None))

    @task(retries=0)  # a bad parameter does not fix itself
    def validate() -> dict:
        from sciops.reporting.notify import run_started
        from sciops.phases.checks import validate as run_validate
        from sciops.phases.transfer import sync_up as run_sync_up

        ctx = get_current_context()
        with refusals():   # sync_up first (sync_from), then every check: one task, not two hops
            synced_up = run_sync_up(run_conf())
            if synced_up is None:
                log.info("no sync_from: the project is already in the storage root")
            ctx["ti"].xcom_push("sync_up", synced_up)
            # published early so that record finds the run folder even if the smoke run fails
            info = run_validate(run_conf(), ctx["run_id"],
                                publish=lambda info: ctx["ti"].xcom_push("run_info", info.dump()))
        run_started(info)
        return info.dump()

    # create_cluster is the setup, and what follows a setup directly must be all_success
    # (Airflow's rule): plan, which stages the project in first and passes the cluster on to collate.
    @task(multiple_outputs=True)
    def plan(info: dict, cluster: dict | None) -> dict:
        from sciops.phases.plan import plan as run_plan
        from sciops.phases.transfer import stage_in as run_stage_in

        if run_stage_in(info, cluster) is None:
            log.info("nothing to stage: the storage root is a local folder, runs work in it directly")
        dag_id = get_current_context()["dag"].dag_id   # in the manifest: the sweeper asks whether the run goes on
        return {**run_plan(info, cluster, dag_id=dag_id), "cluster": cluster}

    # all_done: a run_array that failed (every chunk failed, job deleted outside) still has
    # finished images on disk, and collate gathers them; outcome then fails the run.
    @task(outlets=[COLLATED], trigger_rule="all_done")
    def collate(info: dict | None, manifest: str | None, cluster: dict | None) -> dict:
        from sciops.phases.transfer import collate as run_collate

        if not info or not manifest:
            raise AirflowSkipException("nothing was planned: nothing to collate")
        return run_collate(info, manifest, cluster)

    def run_info():
        # validate publishes the run info before its smoke run, so that a run refused there still
        # gets its run.json; an XComArg of that key would fail to render when validate stopped earlier.
        return get_current_context()["ti"].xcom_pull(task_ids="validate", key="run_info")

    @task(trigger_rule="all_done")  # partial results are pushed and fetched too: nothing is lost
    def deliver() -> dict:
        from sciops.phases.transfer import stage_out as run_stage_out, sync_down as run_sync_down

        info = run_info()
        if not info:   # validate stopped the run: not "no sync_to"
            raise AirflowSkipException("validate did not pass: there is no run folder to push or bring back")
        # one task, two phases (each its own record): the bucket first, then the LAN folder from it
        pushed = run_stage_out(info)
        if pushed is None:
            log.info("nothing to push: local storage root, or no run folder")
        fetched = run_sync_down(info)
        if fetched is None:
            log.info("no sync_to or sync_from: results stay in the storage root")
        return {"stage_out": pushed, "sync_down": fetched}

    @task(trigger_rule="all_done", retries=0, outlets=[LATEST_RESULTS])
    def record(collated: dict | None) -> dict:
        from sciops.phases.record import handoff, record as run_record

        ctx = get_current_context()
        synced_up = ctx["ti"].xcom_pull(task_ids="validate", key="sync_up")
        try:   # a task that failed without its phase record saying so still fails the verdict
            states = ctx["ti"].get_task_states(dag_id=ctx["dag"].dag_id, run_ids=[ctx["run_id"]]).get(ctx["run_id"])
        except Exception as exc:  # noqa: BLE001 - the phases' own records still decide
            log.warning("the run's task states could not be read (%s): the verdict rests on the phase records", exc)
            states = None
        started = ctx["dag_run"].start_date   # the report accounts for the run's wall time from here
        doc = run_record(run_info(), collated, ctx["dag"].dag_id, getattr(ctx["dag_run"].run_type, "value", None),
                         synced_up, task_states=states, dag_run_started=started.timestamp() if started else None)
        latest = doc.pop("latest_results", None)
        if latest:   # downstream DAGs scheduled on the Asset find the project and its table here
            ctx["outlet_events"][LATEST_RESULTS].extra = latest
        return handoff(doc)   # run.json holds the rest

    @task(trigger_rule="all_done", retries=0)
    def outcome(recorded: dict | None) -> dict:
        from sciops.phases.record import outcome as run_outcome

        return run_outcome(recorded)  # raises when a phase failed: the DAG run ends failed

    info = validate()
    create = PClusterCreateOperator(task_id="create_cluster", run_info=info, execution_timeout=timedelta(hours=2))
    planned = plan(info, create.output)
    run_array = FijiArrayOperator(
        task_id="run_array",
        manifest_path=planned["manifest"],
        timeout=timedelta(hours=48),  # the whole array phase, deferrals included (one limit, see the operator)
    )
    collated = collate(info, planned["manifest"], planned["cluster"])
    run_array >> collated
    # The teardown runs once everything that needs the cluster is done, whatever failed. Its
    # trigger rule is all_done, not the teardown default (all done and a setup succeeded): a
    # failed create_cluster still leaves a CREATE_FAILED cluster to delete. Its own failure
    # fails the run (a cluster left running costs money) and alerts.
    delete = PClusterDeleteOperator(task_id="delete_cluster", run_info=info, execution_timeout=timedelta(hours=2))
    collated >> delete.as_teardown(setups=create, on_failure_fail_dagrun=True)
    delete.trigger_rule = "all_done"
    recorded = record(collated)
    collated >> deliver() >> recorded
    delete >> recorded
    outcome(recorded)


fiji_project()
