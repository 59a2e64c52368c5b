"""
### cluster_sweeper: delete ParallelClusters left behind by finished runs

Hourly. Lists the clusters in each region (`regions`, else `$SCIOPS_PCLUSTER_REGIONS`),
keeps those whose `fiji_project` run is still running or queued, and deletes the ones
SciOps made (tag `sciops:run-id`) for runs that are over: a teardown that failed, a
worker that died mid-create. Clusters without SciOps' tags are never touched. With
`dry_run` it only logs what it would delete.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task


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
        "dry_run": Param(False, type="boolean", description="Only log what would be deleted"),
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

        def is_active(dag_id: str, run_id: str) -> bool:
            return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=["running", "queued"]) > 0

        return {region: run_sweep(pc.PCluster(region, env=pc.aws_env(conn_id)), is_active,
                                  dry_run=bool(params.get("dry_run")))
                for region in regions}

    sweep()


cluster_sweeper()
