"""Issue 37, item 2: where the ``sciops`` command's storage root and S3 credentials come from, driven through
``main(argv)`` against the stand-in api-server of test_cli_command.

An AWS profile or an Airflow connection (never both), the storage root Airflow says when none is given here, a
root given here passed to the run only when Airflow allows it. The S3 side against the real signature-checking
endpoint: tests/integration/test_cli_api.py.
"""
from __future__ import annotations

import pytest
from sciops.cli.settings import Stop, settings
from test_cli_command import RUNS, airflow, clean_env, one_line, root, run  # noqa: F401 - fixtures

SERVER = {"storage_root": "s3://lab-imaging/projects", "allowed_storage_roots": ["s3://lab-imaging/scratch"]}


def test_a_profile_or_a_connection_never_both(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('profile = "lab"\n')
    monkeypatch.setenv("SCIOPS_CONFIG", str(config))
    assert (settings().profile, settings().conn_id) == ("lab", None)
    monkeypatch.setenv("SCIOPS_AWS_CONN_ID", "env_conn")       # the environment wins over the file
    assert (settings().profile, settings().conn_id) == (None, "env_conn")
    assert (settings(profile="flag").profile, settings(profile="flag").conn_id) == ("flag", None)   # a flag wins
    with pytest.raises(Stop, match="give --profile .* or --conn-id .*, not both"):
        settings(conn_id="c", profile="p")
    monkeypatch.delenv("SCIOPS_AWS_CONN_ID")
    config.write_text('profile = "lab"\nconn_id = "lab_s3"\n')
    with pytest.raises(Stop, match="conn_id and profile are both set; keep one"):
        settings()


def test_a_profile_that_is_not_there_is_named_with_its_fix(capsys, tmp_path, monkeypatch):
    (tmp_path / "config").write_text("[profile lab]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    code, _, err = run(capsys, "ls", "--storage-root", "s3://lab-imaging", "--profile", "labb")
    assert code == 2 and f"--profile: no AWS profile 'labb' in {tmp_path / 'config'}" in one_line(err)
    assert "aws configure --profile labb" in err
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")   # no instance role to ask, here
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = run(capsys, "ls", "--storage-root", "s3://lab-imaging", "--profile", "lab")
    assert code == 2 and "no AWS credentials found for AWS profile 'lab'" in one_line(err)
    assert "aws sso login --profile lab" in err


def test_without_a_root_here_the_command_asks_airflow(capsys, airflow, tmp_path):
    airflow.storage = {"storage_root": str(tmp_path / "on-the-server"), "allowed_storage_roots": []}
    code, _, err = run(capsys, "ls")
    assert code == 2 and f"storage root is the folder {tmp_path / 'on-the-server'} on its own" in one_line(err)
    (tmp_path / "on-the-server" / "cells").mkdir(parents=True)   # the same folder, mounted here
    assert run(capsys, "ls") == (0, "cells\n", "")
    airflow.storage = None   # an api-server whose SciOps has no such route
    code, _, err = run(capsys, "ls")
    assert code == 2 and "does not say its own" in one_line(err) and "give --storage-root" in err


@pytest.mark.parametrize("airflows", ["own", "allowed"])
def test_run_passes_a_root_given_here_when_airflow_allows_it(capsys, airflow, root, airflows):
    airflow.storage = {"storage_root": f"file://{root}/", "allowed_storage_roots": []} if airflows == "own" else \
        {**SERVER, "allowed_storage_roots": [str(root)]}
    code, _, err = run(capsys, "run", "cells")
    assert code == 0, err
    posted = next(r for r in airflow.requests if r["method"] == "POST" and r["path"] == RUNS)["body"]["conf"]
    assert posted == {"project": "cells", **({"storage_root": str(root)} if airflows == "allowed" else {})}


def test_run_refuses_a_root_airflow_does_not_allow_before_triggering(capsys, airflow, root):
    airflow.storage = SERVER
    code, _, err = run(capsys, "run", "cells")
    assert code == 2 and f"storage root {root} (--storage-root, SCIOPS_STORAGE_ROOT or the config file) is not one " \
                         f"Airflow at {airflow.url} lets runs use: its own is s3://lab-imaging/projects; it also " \
                         "allows s3://lab-imaging/scratch" in one_line(err)
    assert "SCIOPS_ALLOWED_STORAGE_ROOTS" in err and not [r for r in airflow.requests if r["method"] == "POST"
                                                          and r["path"] == RUNS]
