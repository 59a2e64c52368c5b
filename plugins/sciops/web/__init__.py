"""The SciOps web app: runs dashboard, what-if planner, per-run reports (``plugins/sciops_plugin.py`` registers it).

Served by Airflow's API server under ``/sciops`` (a FastAPI app), every route behind
Airflow's own authentication (a JWT from ``/auth/token`` or the UI's session cookie) and
its auth manager's permissions: a user sees only the runs of DAGs whose runs the auth
manager lets them read (``is_authorized_dag(GET, RUN)``, the check Airflow's own
``/dagRuns`` routes make), in every list, chart, planner estimate and report:

- ``/sciops/dashboard``                 cost and duration per run over time, cost per image by
                                        macro, filter by project, and the planner form
- ``/sciops/api/runs``                  ledger rows (``?project=``, ``?limit=``)
- ``/sciops/api/runs/{dag_id}/{run_id}/progress``  a run while it goes: phase, images done/failed,
                                        ETA, spend (``sciops run --wait``)
- ``/sciops/api/storage``               the storage root runs use and the others they may name (what
                                        the ``sciops`` command asks instead of the scientist repeating it)
- ``/sciops/api/summary``               what the dashboard draws (``?project=``)
- ``/sciops/api/planner``               N nodes of type X → duration and cost, from past runs
- ``/sciops/api/tradeoff``              instance types × node counts → duration and cost, and the
                                        cheapest option within a deadline (what the planner form shows)
- ``/sciops/runs/{dag_id}/{run_id}/report``  the run's ``report.html``

By concern:

auth.py     who may read which DAG's runs (``may_read_runs``) and the routes' dependencies
api.py      the FastAPI app and its routes; the ledger's rows and summary
planner.py  the planner: past performance of a macro → an estimate, or the trade-off table
pages.py    the HTML pages, from Jinja2 templates (``templates/``, autoescaped)
links.py    the "SciOps report" extra link on tasks
"""
