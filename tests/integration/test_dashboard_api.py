"""The SciOps plugin's dashboard, planner and report endpoints, through a real Airflow API server."""
from __future__ import annotations

import json

import pytest
from helpers import get

T0 = 1_800_000_000.0


def test_endpoints_need_a_token(api_server, ledger_rows):
    base, _ = api_server
    assert get(base, "/sciops/api/runs")[0] in (401, 403)
    assert get(base, "/sciops/dashboard")[0] in (401, 403)
    assert get(base, "/sciops/api/storage")[0] in (401, 403)


def test_runs_and_summary_filtered_by_project(api_server, ledger_rows):
    base, token = api_server
    status, body = get(base, "/sciops/api/runs?project=alpha", token)
    assert status == 200
    runs = json.loads(body)["runs"]
    assert {r["run_id"] for r in runs} == {"manual__api-0", "manual__api-1"}
    assert runs[0]["cost"]["total_usd"] in (0.10, 0.12)
    summary = json.loads(get(base, "/sciops/api/summary", token)[1])
    assert {"alpha", "beta"} <= set(summary["projects"])
    by_macro = summary["cost_per_image_by_macro"]["count_api"]
    assert by_macro["runs"] == 3 and by_macro["median_usd"] == pytest.approx(0.0012)
    assert [r["run_id"] for r in json.loads(get(base, "/sciops/api/summary?project=beta", token)[1])["per_run"]] \
        == ["manual__api-2"]


def test_planner_estimates_from_past_runs(api_server, ledger_rows):
    from sciops.clusters import backend_class

    base, token = api_server
    status, body = get(base, "/sciops/api/planner?macro=count_api&images=10000&nodes=4&instance_type=c5.xlarge"
                             "&region=us-east-1&memory_mb=2048&project=alpha", token)
    assert status == 200, body
    plan = json.loads(body)
    # the median over the two successful runs: (2.0 + 2.4) / 2 task-seconds per image
    assert plan["from_runs"] == 2 and plan["seconds_per_image"] == pytest.approx(2.2)
    est = plan["estimate"]
    want = backend_class("parallelcluster").estimate_for(10000, 2.2, nodes=4, instance_type="c5.xlarge",
                                                         region="us-east-1", memory_mb=2048)
    assert est == want
    # by hand: c5.xlarge has 4 vCPUs and 8 GiB → 3 tasks of 2 GiB per node (1 GiB kept), 12 at once
    assert est["tasks_per_node"] == 3 and est["compute_s"] == pytest.approx(10000 * 2.2 / 12, abs=0.1)
    # each node billed for its 300 s boot and its share; the head node for creation + boot + compute
    assert est["cost_usd"] == pytest.approx(4 * 0.17 * (300 + est["compute_s"]) / 3600
                                            + 0.0416 * (900 + 300 + est["compute_s"]) / 3600, abs=1e-3)
    assert get(base, "/sciops/api/planner?macro=never-ran&images=10", token)[0] == 404
    status, body = get(base, "/sciops/api/planner?macro=count_api&images=10&instance_type=z9.huge", token)
    assert status == 422 and "unknown instance type 'z9.huge'" in body and "c5.xlarge" in body, body


def test_dashboard_and_report_pages(api_server, ledger_rows):
    base, token = api_server
    status, page = get(base, "/sciops/dashboard?project=alpha", token)
    assert status == 200 and 'id="cost-chart"' in page and 'id="duration-chart"' in page
    # runs by Airflow's id: manual__api-1 is there, manual__api-2 (project beta) is not
    assert "manual__2026-11-21T00:00:00+00:00" in page and "manual__2026-11-22T00:00:00+00:00" not in page
    assert 'id="planner"' in page
    status, report = get(base, "/sciops/runs/fiji_project/manual__2026-11-21T00:00:00+00:00/report", token)
    assert status == 200 and "report 1" in report
    assert get(base, "/sciops/runs/fiji_project/manual__nope/report", token)[0] == 404
    plugins = json.loads(get(base, "/api/v2/plugins", token)[1])["plugins"]
    mine = next(p for p in plugins if p["name"] == "sciops")
    assert {v["name"] for v in mine["external_views"]} == {"SciOps", "Report"}


def test_a_long_ledger_lists_the_newest_runs_and_still_serves_old_reports(api_server, ledger_rows, tmp_path):
    """5,100 runs of one project: the table lists the newest 200 and says how many more there are,
    the medians and the summary take every run, and the report of the oldest run (once past
    the 5,000 rows the report route used to scan) is still served."""
    from sqlalchemy import delete

    from sciops.accounting import ledger

    base, token = api_server
    report = tmp_path / "oldest.html"
    report.write_text("<html><body>the oldest report</body></html>")
    n = 5_100
    rows = [{"dag_id": "fiji_project", "run_id": f"scheduled__many-{i:05d}",
             "airflow_run_id": f"scheduled__2026-01-01T{i:05d}", "project": "many", "status": "success",
             "macro": "count_many", "started_at": T0 - (n - i) * 3600, "duration_s": 60.0, "cost_usd": 0.5,
             "cost_per_image_usd": 0.005 if i % 2 else 0.007, "images_ok": 100, "images_total": 100,
             "params": "{}", "phases": "{}", "cost": "{}", "report": str(report) if i == 0 else None}
            for i in range(n)]
    with ledger.engine().begin() as conn:
        conn.execute(ledger.runs.insert(), rows)
    try:
        status, page = get(base, "/sciops/dashboard?project=many", token)
        assert status == 200 and 'id="runs-more"' in page and f"{n - 200:,} older runs" in page
        assert "scheduled__2026-01-01T05099" in page and "scheduled__2026-01-01T04899" not in page
        summary = json.loads(get(base, "/sciops/api/summary?project=many", token)[1])
        assert summary["runs"] == n and len(summary["per_run"]) == n
        assert summary["cost_per_image_by_macro"]["count_many"] == {"median_usd": pytest.approx(0.006), "runs": n}
        status, body = get(base, "/sciops/runs/fiji_project/scheduled__2026-01-01T00000/report", token)
        assert status == 200 and "the oldest report" in body
    finally:
        with ledger.engine().begin() as conn:
            conn.execute(delete(ledger.runs).where(ledger.runs.c.project == "many"))
