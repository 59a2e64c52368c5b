"""Secrets never surface: the demo on local and on Grid Engine with recognizable fake secrets.

Every connection holds a secret (AWS keys, the Slack webhook token, the SSH private key), the
worker's environment holds AWS keys, and the macro dumps its own environment (``printenv``)
next to its results. Afterwards every log line, every file of the run folder (run.json,
report.html, the macro's env dump), the ledger row and the Slack posts are searched for them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from helpers import REPO, fresh_dag, task_states, wrapping_macro

pytestmark = pytest.mark.imagej

SECRETS = {
    "aws_secret": "SECRETAWSCONNx7Qk2",
    "aws_session": "SECRETAWSTOKENp4Zr",
    "env_secret": "SECRETWORKERENVm3Jd",
    "env_session": "SECRETWORKERTOKENv8Wn",
    "slack_token": "SECRETSLACKh5Tb",
}
# the macro writes the environment it can see into its output folder, then counts as usual
ENV_DUMP_MACRO = wrapping_macro('lines2 = split(getArgument(), "\\n");'
                                'for (i = 0; i < lines2.length; i++) if (startsWith(lines2[i], "output=")) '
                                'File.saveString(exec("printenv"), substring(lines2[i], 7) + "/env.txt");')


@pytest.fixture
def secret_connections(monkeypatch, slack_receiver):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "login": "AKIAFAKEFAKEFAKE0001", "password": SECRETS["aws_secret"],
         "extra": {"aws_session_token": SECRETS["aws_session"]}}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["env_secret"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS["env_session"])
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": json.loads(os.environ["AIRFLOW_CONN_SCIOPS_SLACK"])["host"],
         "password": f"T0000/B0000/{SECRETS['slack_token']}"}))
    return slack_receiver


def _demo(storage: Path) -> Path:
    root = storage / "demo"
    # copyfile, not copytree: new folders keep the storage root's group and setgid bit (the cluster's user
    # writes output/ there); copytree would copy the example's modes over them
    shutil.copytree(REPO / "examples" / "demo", root, copy_function=shutil.copyfile)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o2775)
    (root / "src" / "envdump.ijm").write_text(ENV_DUMP_MACRO)
    return root


def _search(root: Path, caplog, capfd, posts, secrets: dict[str, str], rows) -> dict[str, list[str]]:
    out, err = capfd.readouterr()
    # what reached Slack: the message bodies (the receiver's request path is the webhook URL itself)
    places = {"log": caplog.text + out + err, "slack": json.dumps([p["json"] for p in posts]),
              "ledger": json.dumps(rows, default=str)}
    for path in root.rglob("*"):
        if path.is_file():
            places[str(path.relative_to(root))] = path.read_bytes().decode("utf-8", "replace")
    return {name: [where for where, text in places.items() if secret in text] for name, secret in secrets.items()}


def _env_dumps(run_dir: Path) -> list[str]:
    dumps = [p.read_text() for p in run_dir.rglob("env.txt")]
    assert dumps, "the macro's printenv dump is missing: the test would prove nothing"
    assert all("PATH=" in d for d in dumps)
    return dumps


def test_no_secret_surfaces_on_local(airflow_db, storage, secret_connections, caplog, capfd, monkeypatch):
    from sciops.accounting import ledger

    # the macro dumps its environment with exec("printenv"): the sandbox has no programs to exec (it is tested
    # in test_macro_sandbox), and what this test checks, the scrubbed environment, is what runs without one
    monkeypatch.setenv("SCIOPS_MACRO_SANDBOX", "off")
    caplog.set_level(logging.INFO)
    root = _demo(storage)
    dr = fresh_dag().test(run_conf={"project": "demo", "macro": "src/envdump.ijm"})
    assert dr.state == "success", task_states(dr)
    assert secret_connections, "the run sent no Slack message: the webhook token was never used"
    run_dir = next((root / "output").iterdir())
    dumps = _env_dumps(run_dir)
    assert any("SCIOPS_TASK_ID=" in d for d in dumps)  # what a macro may see: its task, not the worker's keys
    found = _search(root, caplog, capfd, secret_connections, SECRETS, ledger.rows(project="demo"))
    assert found == {name: [] for name in SECRETS}, found


def test_no_secret_surfaces_on_gridengine(airflow_db, gridengine, shared_storage, secret_connections, caplog,
                                          capfd, monkeypatch):
    from sciops.accounting import ledger

    conn = json.loads(os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"])
    key = Path(conn["extra"].pop("key_file")).read_text()
    conn["extra"]["private_key"] = key  # the key itself in the connection: a secret that must stay there
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_CLUSTER", json.dumps(conn))
    key_line = next(line for line in key.splitlines()[1:] if len(line) > 40)
    caplog.set_level(logging.INFO)
    root = _demo(shared_storage)
    dr = fresh_dag().test(run_conf={"project": "demo", "macro": "src/envdump.ijm", "backend": "existing",
                                    "scheduler": "sge", "ssh_conn_id": "sciops_cluster"})
    assert dr.state == "success", task_states(dr)
    run_dir = next((root / "output").iterdir())
    dumps = _env_dumps(run_dir)
    assert any("SGE_TASK_ID=" in d for d in dumps)
    secrets = {**SECRETS, "ssh_private_key": key_line}
    found = _search(root, caplog, capfd, secret_connections, secrets, ledger.rows(project="demo"))
    assert found == {name: [] for name in secrets}, found
