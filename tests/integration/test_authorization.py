"""Who sees which runs: the plugin asks Airflow's auth manager, as Airflow's own /dagRuns does.

A real ``airflow api-server`` (see conftest): ``sciops-admin`` (admin) and ``lab-viewer``
(viewer, allowed to read ``fiji_project`` only). The ledger holds runs of ``fiji_project``
and of a DAG the viewer may not read; every route must agree on what the viewer sees.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from api_fixtures import OTHER_ROOT, SERVER_ROOT, T0, token_for
from helpers import get

HIDDEN_DAG = "fiji_confidential"


@pytest.fixture()
def hidden_run(airflow_db, ledger_rows, tmp_path):
    from sqlalchemy import delete

    from sciops.accounting import ledger

    report = tmp_path / "secret.html"
    report.write_text("<html><body>secret report</body></html>")
    ledger.write({"run_id": "manual__secret-0", "airflow_run_id": "manual__2026-11-30T00:00:00+00:00",
                  "dag_id": HIDDEN_DAG, "project": "secret-project", "trigger": "UI/API", "status": "success",
                  "params": {"backend": "local"}, "macro": {"name": "count_secret", "sha256": "e" * 64},
                  "images": {"total": 10, "ok": 10, "failed": 0}, "started_at": T0 + 9 * 86400,
                  "ended_at": T0 + 9 * 86400 + 60, "array": {"task_seconds": 20.0}, "phases": {},
                  "cost": {"total_usd": 0.5, "node_hours": {}}, "cost_per_image_usd": 0.05, "report": str(report)})
    yield
    with ledger.engine().begin() as conn:
        conn.execute(delete(ledger.runs).where(ledger.runs.c.dag_id == HIDDEN_DAG))


def test_a_viewer_sees_only_the_runs_of_dags_it_may_read(api_server, hidden_run):
    base, admin = api_server
    viewer = token_for(base, "lab-viewer")
    report = f"/sciops/runs/{HIDDEN_DAG}/manual__2026-11-30T00:00:00+00:00/report"

    # the admin sees everything
    runs = json.loads(get(base, "/sciops/api/runs", admin)[1])["runs"]
    assert HIDDEN_DAG in {r["dag_id"] for r in runs}
    assert "secret-project" in json.loads(get(base, "/sciops/api/summary", admin)[1])["projects"]
    assert get(base, report, admin) == (200, "<html><body>secret report</body></html>")
    assert get(base, "/sciops/api/planner?macro=count_secret&images=10&backend=local", admin)[0] == 200

    # the viewer: fiji_project's runs, nothing of the other DAG, in every route
    status, body = get(base, "/sciops/api/runs", viewer)
    assert status == 200
    assert {r["dag_id"] for r in json.loads(body)["runs"]} == {"fiji_project"}
    summary = json.loads(get(base, "/sciops/api/summary", viewer)[1])
    assert "secret-project" not in summary["projects"] and "count_secret" not in summary["cost_per_image_by_macro"]
    assert {"alpha", "beta"} <= set(summary["projects"])
    status, page = get(base, "/sciops/dashboard", viewer)
    assert status == 200 and "manual__2026-11-21T00:00:00+00:00" in page   # manual__api-1, by Airflow's id
    assert "secret" not in page
    status, page = get(base, report, viewer)
    assert status == 403 and 'id="forbidden"' in page and "secret report" not in page
    # an unknown run of that DAG is 403 too: no probing for which run ids exist
    assert get(base, f"/sciops/runs/{HIDDEN_DAG}/manual__nope/report", viewer)[0] == 403
    assert get(base, "/sciops/runs/fiji_project/manual__2026-11-21T00:00:00+00:00/report", viewer) == \
        (200, "<html><body>report 1</body></html>")
    # where fiji_project's runs keep projects: for whoever may read its runs (names only, no connection)
    for who in (admin, viewer):
        assert json.loads(get(base, "/sciops/api/storage", who)[1]) == {"storage_root": SERVER_ROOT,
                                                                       "allowed_storage_roots": [OTHER_ROOT]}
    # the planner estimates only from runs the viewer may read
    assert get(base, "/sciops/api/planner?macro=count_secret&images=10&backend=local", viewer)[0] == 404
    assert get(base, "/sciops/api/tradeoff?macro=count_secret&images=10", viewer)[0] == 404
    status, page = get(base, "/sciops/dashboard?macro=count_secret&images=10&plan=1", viewer)
    assert status == 200 and 'id="planner-error"' in page and "no successful past run" in page

    # and the viewer really is a viewer: Airflow refuses it a trigger
    req = urllib.request.Request(f"{base}/api/v2/dags/fiji_project/dagRuns", method="POST",
                                 data=json.dumps({"logical_date": None, "conf": {"project": "demo"}}).encode(),
                                 headers={"Authorization": f"Bearer {viewer}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 403
