"""Airflow started the way docker-compose.yaml starts it, as processes on this machine.

The settings come from the compose file itself (``x-airflow-common.environment``); only
what names a container is mapped to this machine, each mapping listed in ``HOST_MAP`` and
checked against the file, so the two cannot drift apart silently:

- the ``postgres`` service → the testbed's PostgreSQL (127.0.0.1:5433), a fresh database;
- ``airflow-apiserver:8080`` → 127.0.0.1:<a free port>; the ports each container has to itself
  (the scheduler's health check, the worker's and the triggerer's log servers) → free ports too,
  so that two stacks (a benchmark beside the tests) never meet;
- ``/opt/airflow/...`` and ``/opt/sciops/projects`` → folders of the test.

Then ``docker/init.sh`` (compose's ``airflow-init``) runs with those settings, and the four
services start as separate processes: api-server, scheduler (LocalExecutor), dag-processor,
triggerer. Used by ``tests/deployment/`` and ``bench/bench_deploy.py``.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
            "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
#: Settings whose compose value names a container or a container path; every other
#: setting of x-airflow-common is used exactly as the compose file gives it.
HOST_MAP = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW_CONFIG",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "SCIOPS_STORAGE_ROOT", "AIRFLOW_CONN_SCIOPS_LEDGER",
            "AIRFLOW__API__BASE_URL")
#: Ports each container has to itself under compose (Airflow's fixed defaults 8974, 8793, 8794).
OWN_PORTS = ("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
             "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT")
#: The image's Python runs compiled modules: pip compiles what it installs (``requirements.txt``: pandas,
#: matplotlib, ...) and Python caches ``plugins/``'s bytecode as it imports it. A shell that sets
#: PYTHONDONTWRITEBYTECODE (this testbed's does) would make every task process compile what it imports
#: from source again (``record`` alone: 4.1 s of CPU so, 2.3-2.9 s compiled; matplotlib, pandas). The
#: stack's processes keep their bytecode here instead (PYTHONPYCACHEPREFIX: the checkout and the
#: virtualenv stay untouched), one folder for every stack of this user, so that only the first compiles.
PYCACHE = Path(tempfile.gettempdir(), f"sciops-pycache-{os.getuid()}")
_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def compose_env() -> dict[str, str]:
    """x-airflow-common's environment with ``${VAR:-default}`` resolved as compose would (no .env)."""
    env = compose()["x-airflow-common"]["environment"]
    return {k: _DEFAULT.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), str(v))
            for k, v in env.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The four Airflow services of the compose file, as processes.

    :param home: a folder of the test (AIRFLOW_HOME, logs, config, projects under it).
    :param database_uri: ``postgresql://...`` of an empty database (the metadata DB).
    :param ledger_uri: the run ledger's connection URI (compose: the same PostgreSQL).
    :param extra_env: more environment (connections of the test's systems, e.g. an SSH head node).
    :param dags_folder: the DAG files (default: this checkout's ``dags/``; a benchmark adds another shape).
    """

    def __init__(self, home: Path, database_uri: str, ledger_uri: str, storage_root: Path | None = None,
                 extra_env: dict[str, str] | None = None, dags_folder: Path | None = None):
        self.home = Path(home)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.storage_root = Path(storage_root or self.home / "projects")
        self.procs: dict[str, subprocess.Popen] = {}
        env = compose_env()
        missing = [k for k in HOST_MAP if k not in env]
        assert not missing, f"docker-compose.yaml no longer sets {missing}: update tests/deployment/stack.py"
        config = self.home / "config"
        mapped = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_uri.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW_CONFIG": str(config / "airflow.cfg"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(config / "passwords.json"),
            "SCIOPS_STORAGE_ROOT": str(self.storage_root),
            "AIRFLOW_CONN_SCIOPS_LEDGER": ledger_uri,
            "AIRFLOW__API__BASE_URL": self.base,
        }
        for key in HOST_MAP:  # each mapped setting keeps the compose file's kind: a path, or a URL's scheme
            assert _kind(env[key]) == _kind(mapped[key]), (key, env[key], mapped[key])
        self.compose_settings = env
        self.env = {
            # what the image provides: PATH, the venv's Python; then the compose file's settings
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "SCIOPS_")) and k != "PYTHONDONTWRITEBYTECODE"},
            **env, **mapped,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO / "dags"),  # compose: ./dags:/opt/airflow/dags
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),  # compose: ./plugins:/opt/airflow/plugins
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__API__PORT": str(self.port),
            # in compose each container has these ports to itself; here they must not meet another stack's
            **{key: str(free_port()) for key in OWN_PORTS},
            "AIRFLOW_UID": str(os.getuid()),
            "PYTHONPATH": str(REPO / "plugins"),  # the image: plugins/ is on sys.path for every service
            "PYTHONPYCACHEPREFIX": str(PYCACHE),  # the image's compiled modules (PYCACHE)
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **(extra_env or {}),
        }
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.token: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def init(self) -> str:
        """compose's airflow-init: ``docker/init.sh`` with the same settings."""
        proc = subprocess.run(["bash", str(REPO / "docker" / "init.sh")], env=self.env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"docker/init.sh failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def start(self) -> None:
        (self.home / "service-logs").mkdir(parents=True, exist_ok=True)
        for service, command in SERVICES.items():
            assert compose()["services"][service]["command"] == command, service
            self._spawn(command, self.env)
        self.wait_healthy()

    def up(self, dag_id: str = "fiji_project") -> None:
        """init, start, log in, and ``dag_id`` parsed and unpaused: ready to trigger (the benchmarks' start)."""
        self.init()
        self.start()
        try:
            self.login()
            self.wait_for_dag(dag_id)
            self.unpause(dag_id)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, command: str, env: dict[str, str]) -> None:
        argv = [self.airflow, command]
        if command == "api-server":
            argv += ["--port", str(self.port), "--host", "127.0.0.1"]
        log = open(self.home / "service-logs" / f"{command}.log", "a")
        self.procs[command] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)

    def restart(self, command: str, **env: str) -> None:
        """Restart one service, with some settings changed (as editing its compose environment would)."""
        import signal

        proc = self.procs[command]
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._spawn(command, {**self.env, **env})
        time.sleep(3)  # let the old heartbeat age out of the health answer before asking
        self.wait_healthy()

    def kill(self, command: str) -> None:
        """``kill -9`` of one service with all it started (a container killed: LocalExecutor's task
        processes die with the scheduler), then started again at once, as compose's ``restart: always``."""
        import signal

        proc = self.procs[command]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._spawn(command, self.env)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while True:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            assert not dead, f"{dead} exited at start:\n{self.diagnostics()}"
            try:
                health = json.loads(urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5).read())
                if all((health.get(c) or {}).get("status") == "healthy"
                       for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                    return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            assert time.time() < deadline, f"the services were not healthy in {timeout:.0f} s:\n{self.diagnostics()}"
            time.sleep(1)

    def stop(self) -> None:
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    # -- REST ------------------------------------------------------------------------------
    def password(self, user: str = "airflow") -> str:
        return json.loads((self.home / "config" / "passwords.json").read_text())[user]

    def login(self, user: str = "airflow", password: str | None = None) -> str:
        body = {"username": user, "password": password or self.password(user)}
        status, data = self.request("POST", "/auth/token", body, auth=False)
        assert status in (200, 201), (status, data)
        self.token = data["access_token"]
        return self.token

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        # a GET is asked again when the api-server is slow (2 shared cores) or restarting; nothing else is
        tries = 4 if method == "GET" else 1
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    raw = r.read()
                    status = r.status
                break
            except urllib.error.HTTPError as e:
                raw, status = e.read(), e.code
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == tries - 1:
                    raise
                time.sleep(5)
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            status, dag = self.request("GET", f"/api/v2/dags/{dag_id}")
            if status == 200:
                return dag
            assert time.time() < deadline, f"{dag_id} was not parsed in {timeout:.0f} s:\n{self.diagnostics()}"
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        status, dag = self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        assert status == 200 and dag["is_paused"] is False, (status, dag)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        status, run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 200, (status, run)
        return run["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        from urllib.parse import quote

        deadline = time.time() + timeout
        while True:
            status, run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")
            if status == 200 and run["state"] in ("success", "failed"):
                return run["state"]
            assert time.time() < deadline, f"run {run_id} not done in {timeout:.0f} s:\n{self.diagnostics(run_id)}"
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        status, data = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances")
        assert status == 200, (status, data)
        return data["task_instances"]

    # -- when something went wrong ---------------------------------------------------------
    def diagnostics(self, run_id: str | None = None, dag_id: str = "fiji_project") -> str:
        out = [f"settings: {json.dumps({k: self.env[k] for k in self.compose_settings}, indent=1)}"]
        if run_id and self.token:
            try:
                for ti in self.task_instances(dag_id, run_id):
                    out.append(f"task {ti['task_id']}: {ti['state']} try {ti['try_number']}")
            except AssertionError as exc:
                out.append(f"(task instances unreadable: {exc})")
        for log in sorted((self.home / "service-logs").glob("*.log")):
            out.append(f"--- {log.name} (last 60 lines)\n" + "\n".join(log.read_text().splitlines()[-60:]))
        for log in sorted((self.home / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-12:]:
            out.append(f"--- {log.relative_to(self.home)} (last 25 lines)\n"
                       + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(out)


def _kind(value: str) -> str:
    return "path" if value.startswith("/") else value.split("://")[0].split("+")[0]
