"""The SciOps Airflow plugin: registers the web app of :mod:`sciops.web` with Airflow's API server and UI.

The app (``/sciops``: runs dashboard, what-if planner, per-run reports; see
``plugins/sciops/web/__init__.py``), a "SciOps" navigation entry, a "Report" tab on DAG runs
and a "SciOps report" extra link on tasks. The library (``plugins/sciops/``) is excluded from
Airflow's plugin loader (``plugins/.airflowignore``); this file is the only plugin module.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from sciops.web.api import app
from sciops.web.links import RunReportLink


class SciOpsPlugin(AirflowPlugin):
    name = "sciops"
    fastapi_apps = [{"app": app, "url_prefix": "/sciops", "name": "SciOps"}]
    external_views = [
        {"name": "SciOps", "href": "/sciops/dashboard", "destination": "nav", "url_route": "sciops-runs"},
        {"name": "Report", "href": "/sciops/runs/{DAG_ID}/{RUN_ID}/report", "destination": "dag_run",
         "url_route": "sciops-report"},
    ]
    global_operator_extra_links = [RunReportLink()]
