"""The ``sciops`` command (the installed console script) against the real Airflow API server (issue 37, item 1).

A refused ``-p`` as one line naming the field (Airflow's own Param check), the hint while
fiji_project is paused, a refused run's reason from the ledger route, ``status``'s whole links and
durations, and ``--wait`` across an api-server restart (an api-server of this test's own,
stopped and started again on the same port). S3 from a laptop (issue 37, item 2): an AWS profile
in a config and a credentials file of the test's own, against the testbed's signature-checking
endpoint, the storage root and the allowed roots learned from the api-server.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from api_fixtures import BUCKET, OTHER_ROOT, SERVER_ROOT

USER, PASSWORD = "sciops-admin", "a-test-password"   # tests/api_fixtures.py's admin
PAUSED = "paused: unpause fiji_project (or ask your admin)"


@pytest.fixture
def cli(api_server, tmp_path):
    base, _ = api_server
    env = {**os.environ, "SCIOPS_API_URL": base, "SCIOPS_USER": USER, "SCIOPS_PASSWORD": PASSWORD,
           "SCIOPS_CONFIG": str(tmp_path / "no-config.toml"), "COLUMNS": "80"}
    env.pop("SCIOPS_STORAGE_ROOT", None)
    sciops = [sys.executable, "-m", "sciops"]   # this checkout's (the installed script may be another's)

    def run(*args, **extra):
        return subprocess.run([*sciops, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120)

    run.env, run.command = env, sciops
    return run


def _delete_runs(base, token, prefix=""):
    """The runs these tests triggered stay queued on the paused DAG: delete them (others' tests list runs)."""
    req = urllib.request.Request(f"{base}/api/v2/dags/fiji_project/dagRuns?limit=100",
                                 headers={"Authorization": f"Bearer {token}"})
    for r in json.loads(urllib.request.urlopen(req, timeout=30).read())["dag_runs"]:
        if r["state"] == "queued" and (r.get("conf") or {}).get("project", "").startswith("cli_api"):
            urllib.request.urlopen(urllib.request.Request(
                f"{base}/api/v2/dags/fiji_project/dagRuns/{quote(r['dag_run_id'], safe='')}", method="DELETE",
                headers={"Authorization": f"Bearer {token}"}), timeout=30)


def _pause(base, token):
    """fiji_project paused, as it is when first deployed (another test may have unpaused it: the trigger form's
    "Unpause on trigger" box)."""
    req = urllib.request.Request(f"{base}/api/v2/dags/fiji_project", method="PATCH",
                                 data=json.dumps({"is_paused": True}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert json.loads(urllib.request.urlopen(req, timeout=30).read())["is_paused"] is True


def _lines(proc) -> queue.Queue:
    out: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _until(lines: queue.Queue, words: str, timeout: float, seen: list[str]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if words in seen[-1]:
            return
    raise AssertionError(f"{words!r} not printed within {timeout:.0f} s:\n{''.join(seen)}")


def test_a_refused_param_is_one_line_naming_the_field(cli):
    got = cli("run", "cli_api_cells", "-p", "images_per_task=-1")
    assert got.returncode == 2, got.stdout + got.stderr
    assert len(got.stderr.strip().splitlines()) == 1 and "Failed validating" not in got.stderr, got.stderr
    assert "images_per_task: -1 is less than the minimum of 0" in got.stderr, got.stderr


def test_wait_on_a_paused_dag_says_what_to_do(cli, api_server):
    base, token = api_server
    _pause(base, token)
    proc = subprocess.Popen([*cli.command, "run", "cli_api_cells", "--wait"], env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        _until(_lines(proc), PAUSED, 60, seen)
    finally:
        proc.kill()
        proc.wait(10)
        _delete_runs(base, token)


def test_logs_of_a_refused_run_shows_the_reason_from_the_ledger(cli, api_server, tmp_path):
    from sciops.accounting import ledger

    airflow_run_id = "manual__2026-12-07T05:00:00.000001+00:00"
    ledger.write({"run_id": "manual__2026-12-07T05-00-00.000001-00-00", "airflow_run_id": airflow_run_id,
                  "dag_id": "fiji_project", "project": "cli_api_refused", "trigger": "UI/API", "status": "refused",
                  "reason": "file_pattern: no file in cli_api_refused/input matches '*.png'",
                  "started_at": 1_800_000_000.0, "ended_at": 1_800_000_001.0, "phases": {}})
    (tmp_path / "root" / "cli_api_refused" / "input").mkdir(parents=True)
    got = cli("logs", "cli_api_refused", airflow_run_id, SCIOPS_STORAGE_ROOT=str(tmp_path / "root"))
    assert got.returncode == 0, got.stderr
    assert got.stdout == (f"run {airflow_run_id} refused: file_pattern: no file in cli_api_refused/input matches "
                          "'*.png'\n")
    missing = cli("logs", "cli_api_refused", "manual__2026-01-01T00:00:00+00:00",
                  SCIOPS_STORAGE_ROOT=str(tmp_path / "root"))
    assert missing.returncode == 2 and "has no run 'manual__2026-01-01T00:00:00+00:00'" in missing.stderr


def test_status_prints_whole_links_and_durations(cli, api_server, ledger_rows):
    base, _ = api_server
    got = cli("status", "alpha")
    assert got.returncode == 0 and "…" not in got.stdout, got.stdout + got.stderr
    for run_id in ("manual__2026-11-20T00:00:00+00:00", "manual__2026-11-21T00:00:00+00:00"):
        link = f"{base}/sciops/runs/fiji_project/{quote(run_id, safe='')}/report"
        assert f"report {run_id}: {link}\n" in got.stdout, got.stdout
    assert "10 min 00 s" in got.stdout   # no DAG run in Airflow for these rows: the ledger's 600 s
    one = cli("status", "alpha", "manual__2026-11-20T00-00-00-00-00")   # the run's folder name
    assert one.returncode == 0 and one.stdout.count("report manual__") == 1, one.stdout


def _aws_files(folder: Path, key: dict) -> dict[str, str]:
    """An AWS config and credentials file as `aws configure` leaves them: profile `lab` with the auth endpoint's
    key, `stale` with a secret it refuses; the endpoint in the profile, as AWS's SDKs read it."""
    endpoint = key["extra"]["endpoint_url"]
    (folder / "config").write_text("".join(f"[profile {p}]\nregion = us-east-1\nendpoint_url = {endpoint}\n"
                                           for p in ("lab", "stale")))
    (folder / "credentials").write_text(f"[lab]\naws_access_key_id = {key['login']}\n"
                                        f"aws_secret_access_key = {key['password']}\n"
                                        f"[stale]\naws_access_key_id = {key['login']}\naws_secret_access_key = old\n")
    return {"AWS_CONFIG_FILE": str(folder / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(folder / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true"}


def test_s3_with_an_aws_profile_learns_the_root_from_airflow(cli, api_server, s3_endpoint, tmp_path, monkeypatch,
                                                             capsys):
    """No storage root, no connection, no -p on this machine: the profile's keys and Airflow's root. A bucket that
    is not there is named with its fix and not made; a refused key names the profile; a root Airflow allows goes to
    the run as its storage_root. In this process (`main`), to spare five starts of the command."""
    from sciops.cli.main import main
    from sciops.storage.root import S3Storage

    base, token = api_server
    key = s3_endpoint["sciops_s3_auth"]
    for name, value in {**cli.env, **_aws_files(tmp_path, key), "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        if name.startswith(("SCIOPS_", "AWS_", "XDG_")):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("SCIOPS_STORAGE_ROOT", raising=False)
    monkeypatch.delenv("SCIOPS_AWS_CONN_ID", raising=False)
    lan = tmp_path / "cli_api_laptop"
    (lan / "input").mkdir(parents=True)
    (lan / "input" / "a.tif").write_bytes(b"II*\0" + b"\0" * 60)
    admin = S3Storage(SERVER_ROOT, "sciops_s3_auth")
    said = []

    def sciops(*args):
        code = main(list(args))
        said.append(capsys.readouterr())
        return code, said[-1].out, said[-1].err

    code, _, err = sciops("sync", "up", str(lan), "--profile", "lab")
    assert code == 2, err
    assert (f"Airflow's storage root {SERVER_ROOT}: bucket '{BUCKET}' does not exist at {key['extra']['endpoint_url']}"
            f"; SciOps creates none: create it (`aws s3 mb s3://{BUCKET} --profile lab`)") in err
    assert BUCKET not in {b["Name"] for b in admin.client.boto.list_buckets()["Buckets"]}   # nothing made

    admin.client.create_bucket()   # what the admin does
    code, out, err = sciops("sync", "up", str(lan), "--profile", "lab", "-q")
    assert code == 0 and out.startswith("up: 1 transferred"), out + err
    assert admin.projects() == ["cli_api_laptop"]
    code, _, err = sciops("ls", "--profile", "stale")
    assert code == 2 and "--profile: the credentials of AWS profile 'stale' were refused" in err
    assert "aws sso login --profile stale" in err

    code, out, err = sciops("sync", "up", str(lan), "--profile", "lab", "--storage-root", OTHER_ROOT, "-q")
    assert code == 0, out + err
    code, out, err = sciops("run", "cli_api_laptop", "--profile", "lab", "--storage-root", OTHER_ROOT)
    try:
        assert code == 0, out + err
        req = urllib.request.Request(f"{base}/api/v2/dags/fiji_project/dagRuns/{quote(out.split()[1], safe='')}",
                                     headers={"Authorization": f"Bearer {token}"})
        conf = json.loads(urllib.request.urlopen(req, timeout=30).read())["conf"]
        assert conf == {"project": "cli_api_laptop", "storage_root": OTHER_ROOT}
    finally:
        _delete_runs(base, token)
    assert not [s for s in said if key["password"] in s.out + s.err]
