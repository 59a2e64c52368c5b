"""
### cluster_sweeper: end what finished runs left behind (ParallelClusters, arrays)

Hourly. `sweep` lists the clusters in each region (`regions`, else `$SCIOPS_PCLUSTER_REGIONS`),
keeps those whose `fiji_project` run is still running or queued, and deletes the ones
SciOps made (tag `sciops:run-id`) for runs that are over: a teardown that failed, a
worker that died mid-create. Clusters without SciOps' tags are never touched.

`sweep_arrays` looks at the run folders under the storage root(s) and the work root whose
`run_array` phase still says running. When the DAG run their manifest names is over (marked
failed while its trigger waited, a worker that died, a run deleted from Airflow), the run's
array jobs still in the queue are found by name on its scheduler (the run's SSH connection for
an existing cluster) and cancelled; each is logged and listed in the run's `work/orphans.json`,
and the phase is ended, failed, saying why. A run folder whose scheduler cannot be asked fails
the task after the others are swept. (An array a new plan of the same run supersedes is
cancelled by that plan.)

With `dry_run` both only log what they would delete or cancel.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task


def _is_active(ti):
    def is_active(dag_id: str, run_id: str) -> bool:
        return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=["running", "queued"]) > 0

    return is_active


@dag(
    dag_id="cluster_sweeper",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["sciops", "parallelcluster", "cost"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "dry_run": Param(False, type="boolean", description="Only log what would be deleted or cancelled"),
        "regions": Param(None, type=["null", "array"], description="AWS regions (default: $SCIOPS_PCLUSTER_REGIONS)"),
        "aws_conn_id": Param(None, type=["null", "string"], description="AWS connection pcluster uses"),
    },
)
def cluster_sweeper():
    @task
    def sweep() -> dict:
        from sciops.clusters import parallelcluster as pc
        from sciops.clusters.sweeper import sweep as run_sweep
        from sciops.settings import setting

        ctx = get_current_context()
        params, ti = ctx["params"], ctx["ti"]
        regions = params.get("regions") or setting("SCIOPS_PCLUSTER_REGIONS")
        if not regions:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no regions: set SCIOPS_PCLUSTER_REGIONS or the regions parameter")
        conn_id = params.get("aws_conn_id") or setting("SCIOPS_AWS_CONN_ID")
        return {region: run_sweep(pc.PCluster(region, env=pc.aws_env(conn_id)), _is_active(ti),
                                  dry_run=bool(params.get("dry_run")))
                for region in regions}

    @task
    def sweep_arrays() -> dict:
        from sciops.clusters.sweeper import run_roots, sweep_runs
        from sciops.errors import SciOpsError

        ctx = get_current_context()
        out = sweep_runs(run_roots(), _is_active(ctx["ti"]), dry_run=bool(ctx["params"].get("dry_run")))
        if out["errors"]:
            raise SciOpsError(f"{len(out['errors'])} run folder(s) could not be swept (the others were): "
                              + "; ".join(f"{e['run_dir']}: {e['error']}" for e in out["errors"])[:3000])
        return out

    sweep()
    sweep_arrays()


cluster_sweeper()
