"""The ``sciops`` command, driven through ``main(argv)``: its arguments, settings, one-line errors and exit codes.

The commands that talk to Airflow's REST API talk to a small HTTP server on 127.0.0.1 standing
in for the api-server (tests/deployment drives the real one); the storage commands use a
folder as the storage root.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from helpers import REPO

from sciops.cli import follow
from sciops.cli import main as cli_main
from sciops.cli.main import main
from sciops.cli.settings import settings
from sciops.errors import StorageError

ENV = ("SCIOPS_API_URL", "SCIOPS_USER", "SCIOPS_PASSWORD", "SCIOPS_STORAGE_ROOT", "SCIOPS_AWS_CONN_ID", "SCIOPS_CONFIG")
RUNS = "/api/v2/dags/fiji_project/dagRuns"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting from this machine's environment or config file; the sync's checksum cache in tmp_path."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCIOPS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- a stand-in for Airflow's api-server ---------------------------------------------------------------
class FakeAirflow:
    """``/auth/token`` for one user, fiji_project's runs, and the plugin's ledger, progress and storage routes."""

    USER, PASSWORD, TOKEN = "lab", "s3cret", "tok-1"

    def __init__(self):
        self.requests: list[dict] = []
        self.states = ["success"]        # what GET dagRuns/<id> answers, one per call (the last repeats)
        self.going: list[dict] = []
        self.ledger: list[dict] = []
        self.progress: dict = {}
        self.refuse: dict[tuple[str, str], tuple[int, object]] = {}
        self.paused = False
        self.run_doc: dict = {}          # more of GET dagRuns/<id>'s answer (start_date, end_date...)
        self.storage: dict | None = None   # what /sciops/api/storage answers (None: 404, an older plugin)

    def answer(self, method: str, path: str, body, auth: str | None) -> tuple[int, object]:
        if (method, path) == ("POST", "/auth/token"):
            if body == {"username": self.USER, "password": self.PASSWORD}:
                return 201, {"access_token": self.TOKEN}
            return 401, {"detail": "Invalid credentials"}
        if auth != f"Bearer {self.TOKEN}":
            return 401, {"detail": "Not authenticated"}
        if (method, path) in self.refuse:
            return self.refuse[(method, path)]
        if (method, path) == ("POST", RUNS):
            return 200, {"dag_run_id": "manual__1", "state": "queued", "conf": body["conf"]}
        if (method, path) == ("GET", "/api/v2/dags/fiji_project"):
            return 200, {"dag_id": "fiji_project", "is_paused": self.paused}
        if (method, path) == ("GET", RUNS):
            return 200, {"dag_runs": self.going, "total_entries": len(self.going)}
        if method == "GET" and path.startswith(RUNS + "/"):
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return 200, {"dag_run_id": unquote(path.rsplit("/", 1)[1]), "state": state, **self.run_doc}
        if (method, path) == ("GET", "/sciops/api/runs"):
            return 200, {"runs": self.ledger}
        if method == "GET" and path.endswith("/progress"):
            return 200, self.progress
        if (method, path) == ("GET", "/sciops/api/storage") and self.storage is not None:
            return 200, self.storage
        return 404, {"detail": "Not Found"}


@pytest.fixture
def airflow(monkeypatch):
    fake = FakeAirflow()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _handle(self, method):
            url = urlsplit(self.path)
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size)) if size else None
            fake.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query), "body": body})
            status, reply = fake.answer(method, url.path, body, self.headers.get("Authorization"))
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.server, fake.handler = server, Handler   # a test may stop it and start another on the same port
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("SCIOPS_API_URL", fake.url)
    monkeypatch.setenv("SCIOPS_USER", fake.USER)
    monkeypatch.setenv("SCIOPS_PASSWORD", fake.PASSWORD)
    monkeypatch.setattr(follow, "POLL_SECONDS", 0.0)   # --wait polls without waiting
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A storage root (a folder) with project ``cells``: two finished runs, the newer with a failure."""
    root = tmp_path / "root"
    for run_id, ended, failures in (("r1", 100, ""), ("r2", 200, "b.tif,2,1,failed,Unsupported format\n")):
        out = root / "cells" / "output" / run_id
        (out / "logs").mkdir(parents=True)
        (out / "run.json").write_text(json.dumps({"ended_at": ended}))
        (out / "summary.csv").write_text(f"image,count\na.tif,{ended}\n")
        (out / "failures.csv").write_text("image,task,attempt,status,error\n" + failures)
    (root / "cells" / "output" / "r2" / "logs" / "task-0002.attempt-1.log").write_text(
        "\n".join(f"line {i}" for i in range(50)))
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(root))
    return root


# -- arguments ----------------------------------------------------------------------------------------
def test_init_makes_a_project_folder_and_refuses_a_used_one(capsys, tmp_path):
    code, out, _ = run(capsys, "init", str(tmp_path / "cells"))
    assert code == 0 and f"sciops sync up {tmp_path / 'cells'}" in out
    assert {p.name for p in (tmp_path / "cells").iterdir()} == {"input", "src", "bin", "project.yaml"}
    assert (tmp_path / "cells" / "src" / "my_macro.ijm").read_text().startswith("// A sample: count_nuclei")
    code, _, err = run(capsys, "init", str(tmp_path / "cells"))
    assert code == 2 and "is not empty: give a new folder" in one_line(err)
    code, _, err = run(capsys, "init", str(tmp_path / "bad name"))
    assert code == 2 and "use letters, digits" in one_line(err)


@pytest.mark.parametrize("argv,want", [
    ([], {"project": "lan", "delete": False, "verify": False, "workers": 16, "quiet": False}),
    (["--project", "p2", "--delete", "--verify", "--workers", "3", "-q"],
     {"project": "p2", "delete": True, "verify": True, "workers": 3, "quiet": True}),
])
def test_sync_up_options(capsys, tmp_path, monkeypatch, argv, want):
    seen = {}

    def fake_sync_up(storage, folder, project, *, delete, verify, workers, emit):
        emit("a progress line")
        seen.update(root=storage.url, folder=folder, project=project, delete=delete, verify=verify, workers=workers)
        return SimpleNamespace(direction="up", transferred=1, bytes=2, skipped=0, deleted=0, seconds=0.1,
                               destination_from="listing")

    monkeypatch.setattr("sciops.storage.sync.sync_up", fake_sync_up)
    (tmp_path / "store").mkdir()
    code, out, err = run(capsys, "sync", "up", str(tmp_path / "lan"), "--storage-root", str(tmp_path / "store"),
                         *argv)
    assert code == 0 and out == "up: 1 transferred (2 bytes), 0 unchanged, 0 deleted, 0.10 s\n"
    assert err == ("" if want.pop("quiet") else "a progress line\n")
    assert seen == {"root": str(tmp_path / "store"), "folder": tmp_path / "lan", **want}


def test_run_reads_each_param_as_yaml(capsys, airflow):
    code, out, err = run(capsys, "run", "cells", "-p", "images_per_task=10", "--param", "smoke_test=false",
                         "-p", "budget={max_usd: 5}", "-p", " memory = 1G", "-p", "macro=", "-p", "x=[unclosed")
    assert code == 0, err
    assert out == f"started manual__1\nreport: {airflow.url}/sciops/runs/fiji_project/manual__1/report\n"
    posted = next(r for r in airflow.requests if r["method"] == "POST" and r["path"] == RUNS)["body"]
    assert posted == {"logical_date": None, "conf": {"project": "cells", "images_per_task": 10, "smoke_test": False,
                                                     "budget": {"max_usd": 5}, "memory": "1G", "macro": None,
                                                     "x": "[unclosed"}}


@pytest.mark.parametrize("argv", [["run"], ["sync", "down", "cells"], ["bogus"], ["sync", "up", "x", "--workers", "0"],
                                  ["status", "--limit", "many"]])
def test_usage_errors_are_clicks_own_with_status_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and "Usage:" in err and out == ""


@pytest.mark.parametrize("argv", [[], ["init"], ["run"], ["status"], ["results"], ["logs"], ["ls"], ["sync"],
                                  ["sync", "up"], ["sync", "down"]])
def test_every_command_has_help(capsys, argv):
    code, out, err = run(capsys, *argv, "--help")
    assert code == 0 and "Usage:" in out and err == ""


# -- settings: flags > environment > config file > defaults ---------------------------------------------
def test_settings_precedence(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('api_url = "http://file:8080/"\nuser = "file-user"\nstorage_root = "/file"\n'
                      'conn_id = "file_conn"\n')
    s = settings()
    assert (s.api_url, s.user, s.storage_root, s.conn_id) == ("http://localhost:8080", "airflow", None, None)
    monkeypatch.setenv("SCIOPS_CONFIG", str(config))
    s = settings()
    assert (s.api_url, s.user, s.storage_root, s.conn_id) == ("http://file:8080", "file-user", "/file", "file_conn")
    for name, value in (("API_URL", "http://env:1"), ("USER", "env-user"), ("STORAGE_ROOT", "/env"),
                        ("AWS_CONN_ID", "env_conn")):
        monkeypatch.setenv(f"SCIOPS_{name}", value)
    s = settings()
    assert (s.api_url, s.user, s.storage_root, s.conn_id) == ("http://env:1", "env-user", "/env", "env_conn")
    s = settings("http://flag:2/", "flag-user", "/flag", "flag_conn")
    assert (s.api_url, s.user, s.storage_root, s.conn_id) == ("http://flag:2", "flag-user", "/flag", "flag_conn")


def test_the_storage_root_from_file_env_and_flag(capsys, tmp_path, monkeypatch):
    for name in ("file", "env", "flag"):
        (tmp_path / name / f"from-{name}" / "input").mkdir(parents=True)
    config = tmp_path / "config.toml"
    config.write_text(f'storage_root = "{tmp_path / "file"}"\n')
    monkeypatch.setenv("SCIOPS_CONFIG", str(config))
    assert run(capsys, "ls")[1] == "from-file\n"
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", f"file://{tmp_path / 'env'}")
    assert run(capsys, "ls")[1] == "from-env\n"
    assert run(capsys, "ls", "--storage-root", str(tmp_path / "flag"))[1] == "from-flag\n"


@pytest.mark.parametrize("text,words", [('user = "me"\npassword = "pw"\n', "holds a password: remove it"),
                                        ("user = [\n", "is not valid TOML")])
def test_a_bad_config_file_is_one_line_and_status_2(capsys, tmp_path, monkeypatch, text, words):
    (tmp_path / "config.toml").write_text(text)
    monkeypatch.setenv("SCIOPS_CONFIG", str(tmp_path / "config.toml"))
    code, _, err = run(capsys, "ls")
    assert code == 2 and words in one_line(err) and "pw" not in err


# -- Airflow: login, refusals, exit status 3 --------------------------------------------------------------
def test_a_refused_login_is_status_3_and_never_shows_the_password(capsys, airflow, monkeypatch):
    monkeypatch.setenv("SCIOPS_PASSWORD", "not-the-password")
    code, out, err = run(capsys, "status")
    assert code == 3 and "refused the login of 'lab': wrong user or password" in one_line(err)
    assert "not-the-password" not in out + err


def test_an_unreachable_airflow_is_status_3_naming_the_setting(capsys, monkeypatch):
    monkeypatch.setenv("SCIOPS_PASSWORD", "pw")
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "status", "--api-url", f"http://127.0.0.1:{port}", "--user", "lab")
    assert code == 3 and "cannot reach Airflow" in one_line(err) and "check --api-url or SCIOPS_API_URL" in err


def test_no_password_and_no_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "status")
    assert code == 3 and "set SCIOPS_PASSWORD" in one_line(err)


@pytest.mark.parametrize("status,detail,code,words", [
    (422, [{"loc": ["body", "conf", "images_per_task"], "msg": "must be >= 0"}], 2,
     "422 conf.images_per_task: must be >= 0"),
    (404, "DAG fiji_project not found", 2, "404 DAG fiji_project not found"),
    (500, "boom", 3, "500 boom"),
])
def test_airflow_refusing_a_call(capsys, airflow, status, detail, code, words):
    airflow.refuse[("POST", RUNS)] = (status, {"detail": detail})
    got, _, err = run(capsys, "run", "cells")
    assert got == code and f"Airflow refused POST {RUNS}: {words}" in one_line(err)


# -- run, status -------------------------------------------------------------------------------------------
def test_run_checks_the_project_and_its_params_before_airflow(capsys, airflow, root):
    code, _, err = run(capsys, "run", "nope")
    assert code == 2 and "no project 'nope'" in one_line(err) and "sciops sync up FOLDER" in err
    code, _, err = run(capsys, "run", "cells", "-p", "oops")
    assert code == 2 and "--param 'oops': write it as key=value" in one_line(err)
    assert airflow.requests == []


@pytest.mark.parametrize("states,code", [(["queued", "running", "success"], 0), (["running", "failed"], 1)])
def test_run_wait_follows_the_run(capsys, airflow, states, code):
    airflow.states = list(states)
    airflow.progress = {"phase": "run_array", "images": 3, "done": 3, "failed": 1, "eta_s": 0, "spent_usd": 0.25}
    got, out, err = run(capsys, "run", "cells", "--wait")
    assert got == code and f"{states[-1]} " in out and "3/3 images" in out and "1 failed" in out and "0.25 USD" in out
    if code:
        assert "run manual__1 failed: see `sciops logs cells manual__1`" in one_line(err)
    assert len([r for r in airflow.requests if r["path"] == f"{RUNS}/manual__1"]) == len(states)


def test_status_lists_going_runs_then_the_ledger(capsys, airflow):
    airflow.going = [{"dag_run_id": "manual__going", "state": "running", "conf": {"project": "cells"}},
                     {"dag_run_id": "manual__other", "state": "queued", "conf": {"project": "other"}}]
    airflow.ledger = [{"airflow_run_id": "manual__done", "project": "cells", "status": "success", "images_ok": 3,
                       "images_failed": 0, "images_total": 3, "duration_s": 61.2, "cost_usd": 0.5}]
    code, out, _ = run(capsys, "status", "cells", "--limit", "5")
    assert code == 0 and "manual__going" in out and "manual__other" not in out
    assert "manual__done" in out and "3/0/3" in out and "1 min 01 s" in out and "0.50" in out
    assert out.index("manual__going") < out.index("manual__done")
    ledger = next(r for r in airflow.requests if r["path"] == "/sciops/api/runs")
    assert ledger["query"] == {"limit": ["5"], "project": ["cells"]}


# -- storage commands ----------------------------------------------------------------------------------------
def test_sync_up_ls_and_sync_down_through_a_folder_root(capsys, tmp_path, root):
    lan = tmp_path / "lan" / "tissue"
    (lan / "input").mkdir(parents=True)
    (lan / "input" / "a.tif").write_bytes(b"img")
    (lan / "output" / "old").mkdir(parents=True)   # stays behind
    code, out, err = run(capsys, "sync", "up", str(lan))
    assert code == 0 and out.startswith("copy: 1 transferred (3 bytes)") and "sync up tissue: 1/1 files" in err
    assert (root / "tissue" / "input" / "a.tif").read_bytes() == b"img" and not (root / "tissue" / "output").exists()
    assert run(capsys, "ls") == (0, "cells\ntissue\n", "")
    assert run(capsys, "ls", "cells") == (0, "r1\nr2\n", "")
    code, _, err = run(capsys, "ls", "nope")
    assert code == 2 and "no project 'nope'" in one_line(err)
    code, out, err = run(capsys, "sync", "down", "cells", "r1", str(lan), "--quiet")
    assert code == 0 and out.startswith("copy: 3 transferred") and err == ""
    assert (lan / "output" / "r1" / "summary.csv").read_text() == "image,count\na.tif,100\n"


def test_results_fetches_the_newest_or_a_named_run(capsys, tmp_path, root):
    code, out, _ = run(capsys, "results", "cells", "--to", str(tmp_path / "here"))
    assert code == 0 and out.endswith(f"results: {tmp_path / 'here' / 'output' / 'r2'}\n")
    assert (tmp_path / "here" / "output" / "r2" / "run.json").exists()
    code, _, err = run(capsys, "results", "cells", "r9", "--to", str(tmp_path / "here"))
    assert code == 2 and "has no run 'r9'" in one_line(err) and "newest: r1, r2" in err


def test_results_prints_what_was_measured_warnings_and_outliers(capsys, tmp_path, root):
    from sciops.reporting.results import analyse

    out = root / "cells" / "output" / "r2"
    counts = [40 + i % 5 for i in range(30)] + [0, 0, 0, 0, 160]
    (out / "summary.csv").write_text("image,seconds,count\n" + "".join(
        f"r{1 + i // 12:02d}c{1 + i % 12:02d}.tif,0.1,{n}\n" for i, n in enumerate(counts)))
    doc = {"ended_at": 200, "status": "success", "airflow_run_id": "manual__r2",
           "images": {"ok": 35, "failed": 1, "total": 36}, "results": analyse(out),
           "qc_overlays": {"overlays": 3, "seconds": 0.2, "share_of_macro_time": 0.031}}
    (out / "run.json").write_text(json.dumps(doc))
    code, text, _ = run(capsys, "results", "cells", "--no-fetch")
    assert code == 0 and not (tmp_path / "output").exists()
    lines = text.splitlines()
    assert lines[0] == "run manual__r2: success, images ok 35, failed 1 of 36"
    assert "WARNING empty: 4 of 35 images (11%) have count 0" in text
    assert "count (key): median 42.0, IQR" in text and "outliers: 6:" in text
    assert "  r03c11.tif: count 160.0, " in text and "b.tif: failed: Unsupported format" in text
    assert "QC overlays: 3 (3.1% of the macro's time)" in text and "plate: 96 wells" in text


def test_logs_shows_failures_and_the_end_of_their_logs(capsys, root):
    code, out, _ = run(capsys, "logs", "cells", "r2", "--lines", "2")
    assert code == 0 and "b.tif: failed (task 2, attempt 1): Unsupported format" in out
    assert out.rstrip().endswith("== task-0002.attempt-1.log (last 2 lines) ==\nline 48\nline 49")
    assert run(capsys, "logs", "cells", "r1")[1] == "no image failed\n"
    code, _, err = run(capsys, "logs", "cells", "r7")
    assert code == 2 and "has no run 'r7'" in one_line(err)


def test_a_failed_transfer_is_status_1_and_says_to_run_again(capsys, tmp_path, root, monkeypatch):
    def fail(*args, **kw):
        raise StorageError("sync up p: 1 of 5 file(s) failed (run the sync again to resume): input/x.tif")

    monkeypatch.setattr("sciops.storage.sync.sync_up", fail)
    (tmp_path / "p" / "input").mkdir(parents=True)
    code, _, err = run(capsys, "sync", "up", str(tmp_path / "p"))
    assert code == 1 and "run the sync again to resume" in one_line(err)


def test_an_unforeseen_error_is_one_line_with_status_1(capsys, root, monkeypatch):
    def broken(*args, **kw):
        raise KeyError("surprise")

    monkeypatch.setattr("sciops.storage.root.get_storage", broken)
    code, _, err = run(capsys, "ls")
    assert code == 1 and one_line(err) == "error: KeyError: 'surprise'"


def test_python_m_sciops_is_the_sciops_command(tmp_path, root):
    proc = subprocess.run([sys.executable, "-m", "sciops", "ls", "cells"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert (proc.returncode, proc.stdout) == (0, "r1\nr2\n"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sciops", "ls", "nope"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert proc.returncode == 2 and "no project 'nope'" in proc.stderr
