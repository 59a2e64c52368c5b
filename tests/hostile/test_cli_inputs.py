"""The ``sciops`` command against hostile or careless input (issue 36, item 8), driven through ``main(argv)``.

Each case asserts the exit status, the one-line error naming the setting at fault, and what
reached the outside: no request at all when the command refuses (an HTTP server on this machine,
bound to every address, records what arrives), no password in any output, and no escape sequence
or control character from names or logs on the terminal. The storage commands run on a folder
storage root; nothing outside the test's folder changes.
"""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sciops.cli.main import main

ENV = ("SCIOPS_API_URL", "SCIOPS_USER", "SCIOPS_PASSWORD", "SCIOPS_STORAGE_ROOT", "SCIOPS_AWS_CONN_ID", "SCIOPS_CONFIG")
PASSWORD = "pw-hunter2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCIOPS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SCIOPS_PASSWORD", PASSWORD)


@pytest.fixture
def listener():
    """An HTTP server on every address of this machine that records each request and refuses the login."""
    seen: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            size = int(self.headers.get("Content-Length") or 0)
            seen.append(("POST", self.path, self.rfile.read(size).decode()))
            data = json.dumps({"detail": "Invalid credentials"}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.seen = seen
    yield server
    server.shutdown()
    server.server_close()


def lan_address() -> str:
    """This machine's address on its network (not loopback): where a plain-http URL would send the password."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))   # no packet is sent (UDP): the kernel picks the outgoing interface
        address = s.getsockname()[0]
    assert not address.startswith("127."), "this machine has no network address besides loopback"
    return address


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- plain http: the password never leaves in clear unless asked ------------------------------------------------
URLS = [   # (url, extra flags, refused, words)
    ("http://{lan}:{port}", [], True, "plain http to another machine"),
    ("http://169.254.169.254", [], True, "plain http to another machine"),
    ("http://metadata.google.internal:80", [], True, "plain http to another machine"),
    ("ftp://{lan}:{port}", [], True, "not an http(s) URL"),
    ("file:///etc/passwd", [], True, "not an http(s) URL"),
    ("http://{lan}:{port}", ["--insecure-http"], False, "refused the login"),
    ("http://127.0.0.1:{port}", [], False, "refused the login"),
    ("http://localhost:{port}", [], False, "refused the login"),
]


@pytest.mark.parametrize("url,flags,refused,words", URLS, ids=[f"{u.split(':')[0]}-{i}" for i, (u, *_r) in
                                                                enumerate(URLS)])
@pytest.mark.parametrize("command", [["status"], ["run", "proj"]])
def test_api_url_in_clear(capsys, listener, command, url, flags, refused, words):
    url = url.format(lan=lan_address(), port=listener.server_address[1])
    code, out, err = run(capsys, *command, "--api-url", url, "--user", "lab", *flags)
    assert words in one_line(err)
    if refused:
        assert code == 2 and "--api-url" in err and listener.seen == []
    else:
        assert code == 3 and [p for _, p, _ in listener.seen] == ["/auth/token"]


# -- config.toml: a password anywhere, unknown keys, wrong types: named, never ignored -------------------------
CONFIGS = [   # (file text, the key the error names)
    (f'[airflow]\npassword = "{PASSWORD}"\n', "airflow.password"),
    (f'PASSWORD = "{PASSWORD}"\n', "PASSWORD"),
    (f'api_url = "http://127.0.0.1:1"\n[server]\npasswd = "{PASSWORD}"\n', "server.passwd"),
    (f'[x]\ny = {{ token = "{PASSWORD}" }}\n', "x.y.token"),
    (f'secret_key = "{PASSWORD}"\n', "secret_key"),
    ('api_url = 5\n', "api_url"),
    ('user = ["lab"]\n', "user"),
    ('conn_id = true\n', "conn_id"),
    ('storage_root = {path = "/x"}\n', "storage_root"),
    ('apiurl = "http://127.0.0.1:1"\n', "apiurl"),
    ('[airflow]\napi_url = "http://127.0.0.1:1"\n', "airflow"),
]


@pytest.mark.parametrize("text,key", CONFIGS, ids=[k for _, k in CONFIGS])
@pytest.mark.parametrize("command", [["status"], ["ls"]])
def test_config_file_problems_are_named(capsys, tmp_path, monkeypatch, listener, command, text, key):
    (tmp_path / "config.toml").write_text(text)
    monkeypatch.setenv("SCIOPS_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("SCIOPS_API_URL", f"http://127.0.0.1:{listener.server_address[1]}")
    code, _, err = run(capsys, *command)
    line = one_line(err)
    assert code == 2 and key in line and "config.toml" in line, line
    assert "--api-url" not in line and listener.seen == []


# -- sciops run -p: bounded values, and never the project again -------------------------------------------------
def _bomb() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "{" + ", ".join(lines) + "}"


PARAMS = [   # (the -p item, words)
    ("project=other", "the project is the command's argument"),
    (" project=other", "the project is the command's argument"),
    ("project =other", "the project is the command's argument"),
    ("macro_args=" + _bomb(), "anchors and aliases are not accepted"),
    ("macro_args={k: *a}", "alias"),
    ("images_per_task=" + "[" * 3000 + "]" * 3000, "nested more than 16"),
    ("macro=" + "a" * 70_000, "more than the 65,536 accepted"),
    ("=5", "key=value"),
]


@pytest.mark.parametrize("item,words", PARAMS, ids=[f"p{i}" for i in range(len(PARAMS))])
def test_run_params_bounded(capsys, listener, item, words):
    code, _, err = run(capsys, "run", "proj", "-p", item, "--api-url", f"http://127.0.0.1:{listener.server_address[1]}")
    assert code == 2 and words in one_line(err) and len(err) < 1000
    assert listener.seen == []   # nothing sent: no login, no run


# -- names and logs reach the terminal as text, never as escape sequences ---------------------------------------
HOSTILE_TEXT = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x1b]52;c;ZWNobyBoaQ==\x07", "\x9b31m", "a\rb", "\x08\x08X",
                "\u2028", "\x1b[31mred\x1b[0m"]


def _no_control(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029"]
    assert bad == [], (bad, text[:300])


@pytest.mark.parametrize("evil", HOSTILE_TEXT, ids=[f"t{i}" for i in range(len(HOSTILE_TEXT))])
def test_logs_and_ls_show_no_escape_sequences(capsys, tmp_path, monkeypatch, evil):
    root = tmp_path / "root"
    out = root / "cells" / "output" / "r1"
    (out / "logs").mkdir(parents=True)
    (root / f"proj{evil}x").mkdir()
    image = f"{evil}.tif"
    (out / "failures.csv").write_text("image,task,attempt,status,error\n"
                                      f"\"{image}\",1,1,failed,\"ImageJ said {evil}\"\n")
    (out / "logs" / "task-0001.attempt-1.log").write_text(f"line 1\nmacro printed {evil} here\nline 3\n")
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(root))
    for argv in (["logs", "cells", "r1"], ["ls"], ["logs", "cells", f"r{evil}"], ["ls", f"cells{evil}"]):
        code, stdout, stderr = run(capsys, *argv)
        _no_control(stdout)
        _no_control(stderr)
    code, stdout, _ = run(capsys, "logs", "cells", "r1")
    assert code == 0 and "macro printed" in stdout and "line 3" in stdout
