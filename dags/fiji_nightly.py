"""
### fiji_nightly: every night, each opted-in project's macro over its new images

At `$SCIOPS_NIGHTLY_SCHEDULE` (a cron expression; default `0 2 * * *`, 02:00 every night)
`scan` looks at every project under the storage root. A project takes part when its
`project.yaml` says `nightly: true`. It gets one `fiji_project` run, with `only_new: true`,
when some of its images have not been processed by its macro with its `macro_args`: new
images, images rewritten since, or all of them after the macro or its arguments changed. A
project with nothing new is skipped (the log says so); a project whose `project.yaml` or
files are wrong is reported in the log and on Slack and does not stop the others.
`start_runs` triggers the runs (one mapped task per project) and waits for them in the
triggerer: the nightly run is the night's batch, failed if a project's run failed, and the
next night does not start while it goes on (`max_active_runs=1`), so a long run is never
started twice over the same images. Each run reports itself as any run does (run.json, the
dashboard, Slack).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from sciops.settings import setting


@dag(
    dag_id="fiji_nightly",
    schedule=setting("SCIOPS_NIGHTLY_SCHEDULE"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["sciops", "imagej", "nightly"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
)
def fiji_nightly():
    @task
    def scan() -> list[dict]:
        from sciops.run.nightly import report, run_confs, scan as scan_projects

        decisions = scan_projects()
        report(decisions)
        return run_confs(decisions)

    TriggerDagRunOperator.partial(
        task_id="start_runs",
        trigger_dag_id="fiji_project",
        trigger_run_id="nightly__{{ ts_nodash }}__{{ ti.map_index }}",   # record says "nightly"
        wait_for_completion=True,
        deferrable=True,       # waits in the triggerer, holding no worker slot
        poke_interval=30,
    ).expand(conf=scan())


fiji_nightly()
