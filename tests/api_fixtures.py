"""The Airflow API server of the integration and hostile tests, its tokens and ledger rows.

One server for the whole session: tests/conftest.py imports these fixtures (a conftest of each folder
would give each folder a server of its own: ~30 s more to start one).

The server runs Airflow's simple auth manager with one admin and one viewer; the viewer is
limited to reading ``fiji_project`` (``tests/fixtures/auth/dag_scoped_auth_manager.py``: the
simple manager lets every role read every DAG, as FAB or Keycloak would not). Its storage root
is an S3 prefix on the testbed's auth-checking endpoint, in a bucket nobody has made yet
(:data:`SERVER_ROOT`; test_cli_api.py makes it, as an admin would), and its runs may also name
:data:`OTHER_ROOT`: what ``sciops`` learns from ``/sciops/api/storage``.
"""
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
#: The api-server's storage root, and another its runs may name (SCIOPS_ALLOWED_STORAGE_ROOTS).
BUCKET = f"sciops-laptop-{os.getpid()}-{int(time.time())}"
SERVER_ROOT, OTHER_ROOT = f"s3://{BUCKET}/labroot", f"s3://{BUCKET}/other"
USERS = {"sciops-admin": "a-test-password", "lab-viewer": "a-viewer-password"}
AUTH = Path(__file__).resolve().parent / "fixtures" / "auth"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def api_server(airflow_db):
    port = _free_port()
    # Airflow's simple auth manager with one admin user whose password we choose (never all-admins:
    # that would let anonymous requests in and prove nothing about the plugin's auth).
    passwords = Path(airflow_db) / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "sciops-admin:admin,lab-viewer:viewer",
           "AIRFLOW__CORE__AUTH_MANAGER": "dag_scoped_auth_manager.DagScopedAuthManager",
           "SCIOPS_TEST_DAG_SCOPES": json.dumps({"lab-viewer": ["fiji_project"]}),
           "PYTHONPATH": f"{AUTH}:{os.environ.get('PYTHONPATH', '')}",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "SCIOPS_STORAGE_ROOT": SERVER_ROOT, "SCIOPS_ALLOWED_STORAGE_ROOTS": f"{OTHER_ROOT}/"}
    # the UI's pages (the trigger form) need fiji_project in the database: what the dag-processor would do
    airflow = str(Path(sys.executable).with_name("airflow"))
    proc = subprocess.run([airflow, "dags", "reserialize"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
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
    yield base, token_for(base, "sciops-admin")
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def job_dir(shared_storage):
    """A folder for jobs' logs on storage the cluster's job user can write."""
    d = shared_storage / "jobs"
    (d / "logs").mkdir(parents=True)
    return str(d)


def token_for(base: str, user: str) -> str:
    """A JWT for one of :data:`USERS` from ``/auth/token``, as the CLI and scripts get one."""
    req = urllib.request.Request(f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": user, "password": USERS[user]}).encode())
    return json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]


@pytest.fixture(scope="session")
def ledger_rows(airflow_db, tmp_path_factory):
    """Three past runs of one macro in two projects (the default ledger: SQLite in AIRFLOW_HOME)."""
    from sciops.accounting import ledger

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


