"""The SciOps plugin's dashboard, planner and report endpoints, through a real Airflow API server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

T0 = 1_800_000_000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(airflow_db):
    port = _free_port()
    # Airflow's simple auth manager with one admin user whose password we choose (never all-admins:
    # that would let anonymous requests in and prove nothing about the plugin's auth).
    passwords = Path(airflow_db) / "passwords.json"
    passwords.write_text(json.dumps({"sciops-admin": "a-test-password"}))
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "sciops-admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    log = open(Path(airflow_db) / "api-server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server", "--port", str(port),
                             "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2)
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError("the API server did not start:\n"
                                     + (Path(airflow_db) / "api-server.log").read_text()[-3000:])
            time.sleep(1)
    req = urllib.request.Request(f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": "sciops-admin", "password": "a-test-password"}).encode())
    token = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
    yield base, token
    proc.terminate()
    proc.wait(30)


def get(base, path, token=None):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def ledger_rows(airflow_db, tmp_path_factory):
    """Three past runs of one macro in two projects (the default ledger: SQLite in AIRFLOW_HOME)."""
    from sciops import ledger

    reports = tmp_path_factory.mktemp("reports")
    for i, (project, secs, cost, status) in enumerate((("alpha", 2.0, 0.10, "success"), ("alpha", 2.4, 0.12, "success"),
                                                       ("beta", 3.0, 0.30, "failed"))):
        report = reports / f"r{i}.html"
        report.write_text(f"<html><body>report {i}</body></html>")
        ledger.write({"run_id": f"manual__api-{i}", "airflow_run_id": f"manual__2026-11-2{i}T00:00:00+00:00",
                      "dag_id": "fiji_project", "project": project, "trigger": "UI/API", "status": status,
                      "params": {"backend": "parallelcluster"}, "macro": {"name": "count_api", "sha256": "f" * 64},
                      "images": {"total": 100, "ok": 100 if status == "success" else 50, "failed": 0},
                      "started_at": T0 + i * 86400, "ended_at": T0 + i * 86400 + 600,
                      "array": {"task_seconds": secs * 100}, "phases": {},
                      "cost": {"total_usd": cost, "node_hours": {"c5.xlarge (on-demand)": 0.5}},
                      "cost_per_image_usd": cost / 100, "report": str(report)})


def test_endpoints_need_a_token(api_server, ledger_rows):
    base, _ = api_server
    assert get(base, "/sciops/api/runs")[0] in (401, 403)
    assert get(base, "/sciops/dashboard")[0] in (401, 403)


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
    from sciops import costs

    base, token = api_server
    status, body = get(base, "/sciops/api/planner?macro=count_api&images=10000&nodes=4&instance_type=c5.xlarge"
                             "&region=us-east-1&memory_mb=2048&project=alpha", token)
    assert status == 200, body
    plan = json.loads(body)
    # the median over the two successful runs: (2.0 + 2.4) / 2 task-seconds per image
    assert plan["from_runs"] == 2 and plan["seconds_per_image"] == pytest.approx(2.2)
    est = plan["estimate"]
    want = costs.estimate(10000, 2.2, backend="parallelcluster", nodes=4, instance_type="c5.xlarge",
                          region="us-east-1", memory_mb=2048)
    assert est == want
    # by hand: c5.xlarge has 4 vCPUs and 8 GiB → 3 tasks of 2 GiB per node (1 GiB kept), 12 at once
    assert est["tasks_per_node"] == 3 and est["compute_s"] == pytest.approx(10000 * 2.2 / 12, abs=0.1)
    assert est["cost_usd"] == pytest.approx(4 * 0.17 * est["compute_s"] / 3600
                                            + 0.0416 * (900 + est["compute_s"]) / 3600, abs=1e-3)
    assert get(base, "/sciops/api/planner?macro=never-ran&images=10", token)[0] == 404


def test_dashboard_and_report_pages(api_server, ledger_rows):
    base, token = api_server
    status, page = get(base, "/sciops/dashboard?project=alpha", token)
    assert status == 200 and 'id="cost-chart"' in page and 'id="duration-chart"' in page
    assert "manual__api-1" in page and "manual__api-2" not in page and 'id="planner"' in page
    status, report = get(base, "/sciops/runs/fiji_project/manual__2026-11-21T00:00:00+00:00/report", token)
    assert status == 200 and "report 1" in report
    assert get(base, "/sciops/runs/fiji_project/manual__nope/report", token)[0] == 404
    plugins = json.loads(get(base, "/api/v2/plugins", token)[1])["plugins"]
    mine = next(p for p in plugins if p["name"] == "sciops")
    assert {v["name"] for v in mine["external_views"]} == {"SciOps runs", "Report"}
