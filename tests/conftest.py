"""Shared fixtures. Airflow reads its settings at import, so the environment is set here first."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from api_fixtures import api_server, job_dir, ledger_rows  # noqa: F401  (one API server for every folder)
from helpers import REPO, REPORT
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="sciops-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "SCIOPS_POLL_SECONDS": "1",
    # dag.test has no scheduler to race (see sciops.triggers): defer at once and hold no event,
    # so these tests exercise the triggers. The deployment tests run with the real defaults.
    "SCIOPS_WORKER_WAIT_SECONDS": "0",
    "SCIOPS_MIN_DEFER_SECONDS": "0",
})


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata DB (SQLite) in a temporary AIRFLOW_HOME, for dag.test()."""
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from airflow import settings

    settings.configure_orm()
    yield _AIRFLOW_HOME
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def storage(request, tmp_path, monkeypatch):
    """An empty storage root (a local folder), set for the code under test.

    A test that also asks for ``shared_storage`` (a root the cluster user can write) gets that one.
    """
    if "shared_storage" in request.fixturenames:
        return request.getfixturevalue("shared_storage")
    root = tmp_path / "storage"
    root.mkdir()
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(root))
    return root


@pytest.fixture
def make_project(storage):
    """Create ``storage/<name>/`` with input images of known nucleus counts."""
    from sciops.imaging.synthetic import make_images

    def make(name="proj", counts=None, project_yaml=None, size=128):
        root = storage / name
        for d in ("input", "src", "bin"):
            (root / d).mkdir(parents=True, exist_ok=True)
        make_images(root / "input", counts if counts is not None else {"a.tif": 3, "b.tif": 5}, size=size)
        if project_yaml is not None:
            (root / "project.yaml").write_text(project_yaml)
        return root

    return make


@pytest.fixture(scope="session")
def imagej():
    """The ImageJ launcher; the suite fails (never skips) when ImageJ is not installed."""
    from sciops.imaging.imagej import detect_launcher

    launcher = detect_launcher("imagej1")
    assert launcher, "ImageJ 1 is not installed: run scripts/setup.sh (Debian packages imagej, xvfb, a JRE)"
    return launcher


def pytest_terminal_summary(terminalreporter):
    for key, value in REPORT.items():
        terminalreporter.write_line(f"sciops: {key}: {value}")


TESTBED = REPO / "scripts" / "testbed"


def _run_testbed(script: str, *args: str) -> str:
    proc = subprocess.run(["bash", str(TESTBED / script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"testbed {script} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def gridengine():
    """Grid Engine and sshd running (started by scripts/test.sh; started here if not). Never skipped."""
    _run_testbed("gridengine.sh", "start")
    _run_testbed("sshd.sh", "start")
    conn = _run_testbed("sshd.sh", "conn").strip().splitlines()[-1]
    os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"] = conn
    os.environ.setdefault("SGE_ROOT", "/var/lib/gridengine")
    return "sciops_cluster"


@pytest.fixture(scope="session")
def slurm(gridengine):
    """Slurm (munge, MariaDB + slurmdbd, slurmctld, slurmd) running too; the same sshd head node."""
    _run_testbed("slurm.sh", "start")
    return gridengine


@pytest.fixture
def shared_storage(gridengine, monkeypatch):
    """A storage root the cluster's job user can write to (group 'sciops', setgid, umask 002)."""
    import grp
    import uuid

    base = Path("/srv/sciops-testbed")
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    root = base / f"storage-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    os.chown(root, 0, grp.getgrnam("sciops").gr_gid)
    os.chmod(root, 0o2775)
    old = os.umask(0o002)
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(root))
    yield root
    os.umask(old)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto_server on 127.0.0.1 (started by scripts/test.sh; started here if not). Never skipped.

    Sets the Airflow connections ``sciops_s3`` (any credentials accepted), ``sciops_s3_auth``
    (an endpoint that checks signatures against its one IAM user's key) and ``sciops_s3_kms``
    (ETags that are not the MD5, as with SSE-KMS: scripts/testbed/moto_kms.py).
    """
    _run_testbed("s3.sh", "start")
    names = {"sciops_s3": "open", "sciops_s3_auth": "auth", "sciops_s3_kms": "kms"}
    for name, which in names.items():
        os.environ[f"AIRFLOW_CONN_{name.upper()}"] = _run_testbed("s3.sh", "conn", which).strip().splitlines()[-1]
    import json

    return {name: json.loads(os.environ[f"AIRFLOW_CONN_{name.upper()}"]) for name in names}


@pytest.fixture
def s3_root(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket; SciOps' storage root is ``s3://<bucket>/labroot`` and its work root a temp folder."""
    import uuid

    from sciops.storage.root import S3Storage

    bucket = f"sciops-test-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(f"s3://{bucket}/labroot", "sciops_s3")
    storage.client.create_bucket()
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", storage.url)
    monkeypatch.setenv("SCIOPS_AWS_CONN_ID", "sciops_s3")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(work))
    return storage


@pytest.fixture
def fake_pcluster(tmp_path, monkeypatch):
    """A pcluster executable (the fake) and its state file; SCIOPS_PCLUSTER points at it."""
    exe = tmp_path / "pcluster"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests/fixtures/pcluster/fake_pcluster.py'} \"$@\"\n")
    exe.chmod(0o755)
    state = tmp_path / "pcluster-state.json"
    state.write_text(json.dumps({"settings": {"polls": 2}}))
    monkeypatch.setenv("SCIOPS_PCLUSTER", str(exe))
    monkeypatch.setenv("FAKE_PCLUSTER_STATE", str(state))
    monkeypatch.setenv("SCIOPS_PCLUSTER_POLL_SECONDS", "0")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "login": "AKIATEST",
                                                               "password": "not-a-real-secret"}))

    class Fake:
        path = exe

        def state(self):
            return json.loads(state.read_text())

        def set(self, **settings):
            data = self.state()
            data["settings"].update(settings)
            state.write_text(json.dumps(data))

    return Fake()


@pytest.fixture
def slack_receiver(monkeypatch):
    """An HTTP server on 127.0.0.1 standing in for Slack's webhook endpoint; collects what is posted.

    Sets the Airflow connection ``sciops_slack`` (a ``slackwebhook`` connection) to point at it.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts.append({"path": self.path, "json": json.loads(body or b"{}"),
                          "auth": self.headers.get("Authorization")})
            api = self.path.startswith("/api/")  # the Web API answers JSON, a webhook answers "ok"
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if api else "text/plain")
            self.end_headers()
            self.wfile.write(b'{"ok": true, "ts": "1.0"}' if api else b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{server.server_port}",
         "password": "T0000/B0000/not-a-real-token"}))
    # the Web API way too (chat.postMessage), for the tests that ask for it by name
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_API", json.dumps(
        {"conn_type": "slack", "password": "xoxb-not-a-real-token",
         "extra": {"base_url": f"http://127.0.0.1:{server.server_port}/api/", "channel": "#imaging"}}))
    yield posts
    server.shutdown()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 30 MB tmpfs of its own (the tests run as root), unmounted after: a filesystem that fills up for real."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m,mode=0755", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def silent_listener():
    """``silent_listener()`` → the port of a TCP socket on 127.0.0.1 that accepts every connection and never
    answers: a wedged database or webhook. Closed after the test."""
    import socket
    import threading

    servers, held, stop = [], [], threading.Event()

    def serve(srv):
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                return

    def start() -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        servers.append((srv, threading.Thread(target=serve, args=(srv,), daemon=True)))
        servers[-1][1].start()
        return srv.getsockname()[1]

    yield start
    stop.set()
    for srv, thread in servers:
        thread.join(5)
        srv.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="session")
def postgres_ledger():
    """PostgreSQL on 127.0.0.1 (scripts/testbed/postgres.sh): the ledger's connection URI. Never skipped."""
    _run_testbed("postgres.sh", "start")
    return _run_testbed("postgres.sh", "conn").strip().splitlines()[-1]


#: Screenshots the browser tests take: kept after the run (CI can upload the folder).
ARTIFACTS = REPO / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (the suite fails, never skips, without it).

    Per module: Playwright's sync API keeps an asyncio loop running in the main thread while it
    is open, and later tests call ``asyncio.run``.
    """
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/test.sh installs Debian's chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def screenshot(request):
    """``screenshot(page_or_locator, name)`` → a PNG under artifacts/screenshots/, named after the test."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(target, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        kwargs = {"full_page": True} if hasattr(target, "goto") else {}
        target.screenshot(path=str(path), **kwargs)
        assert path.stat().st_size > 5_000, path
        return path

    return take


CONSOLE = REPO / "tests" / "fixtures" / "pcluster" / "console_output.txt"


@pytest.fixture
def pcluster_head(gridengine, monkeypatch):
    """The head node of a "new cluster" (the testbed sshd) and what EC2 says of it.

    ``sciops_pcluster_head`` is the testbed's SSH connection without a pinned host key, as a
    ParallelCluster head connection must be. The one seam: EC2's GetConsoleOutput (moto's is
    a canned kernel log) answers cloud-init's console with this sshd's real host key in it.
    Returns ``(conn_id, host_key)``.
    """
    conn = json.loads(_run_testbed("sshd.sh", "conn").strip().splitlines()[-1])
    host_key = conn["extra"].pop("host_key")
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_PCLUSTER_HEAD", json.dumps(conn))
    from sciops.clusters.parallelcluster import host_keys

    console = CONSOLE.read_text().replace("{KEY}", host_key.split()[1])
    monkeypatch.setattr(host_keys, "console_output", lambda instance_id, region, aws_conn_id: console)
    return "sciops_pcluster_head", host_key


def _leftovers() -> dict[str, set[str]]:
    """What tasks may leave behind on this machine: job-user processes, JVMs and Xvfbs of runners, scratch."""
    import glob
    import pwd
    import tempfile

    procs: set[str] = set()
    try:
        job_uid = pwd.getpwnam("sciops").pw_uid
    except KeyError:
        job_uid = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            uid = os.stat(f"/proc/{entry}").st_uid
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z" or not cmd:
            continue
        ours = "Xvfb -displayfd" in cmd or "sciops_task.py" in cmd or "-Dsciops" in cmd or "ij.jar -port0" in cmd
        if ours or (uid == job_uid and "sshd" not in cmd):
            procs.add(f"{entry} {cmd[:160]}")
    return {"processes": procs, "scratch": set(glob.glob(os.path.join(tempfile.gettempdir(), "sciops-task*")))}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole suite, no task's process (job user, JVM, Xvfb) and no task scratch folder is left.

    Compared with what was there before the suite (a killed earlier run is not this run's doing).
    """
    before = _leftovers()
    yield
    import time

    deadline = time.time() + 30
    while True:
        new = {k: v - before[k] for k, v in _leftovers().items()}
        if not any(new.values()) or time.time() > deadline:
            break
        time.sleep(1)
    assert not any(new.values()), f"left behind by the suite: {new}"
