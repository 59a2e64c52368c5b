"""The "SciOps report" extra link Airflow's UI shows on every task of a fiji_project run."""
from __future__ import annotations

try:  # the link class moved between Airflow 3 releases
    from airflow.sdk import BaseOperatorLink
except ImportError:  # pragma: no cover
    from airflow.models.baseoperatorlink import BaseOperatorLink


class RunReportLink(BaseOperatorLink):
    """"SciOps report" on every task of a fiji_project run."""

    name = "SciOps report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != "fiji_project":
            return ""
        return f"/sciops/runs/{ti_key.dag_id}/{ti_key.run_id}/report"
