"""Issue 37, item 1: the ``sciops`` command without friction, driven through ``main(argv)``.

Run ids as ``status`` prints them and as folders; a missing root, project or run is exit 2 with
one sentence; ``--wait``'s label, count, pause hint and reconnection; a refused run's reason in
``logs``; whole report links and true durations in ``status``; one line for a refused ``-p``.
Airflow is the stand-in api-server of test_cli_command (tests/integration/test_cli_api.py
drives the real one); the storage root is a folder.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
from sciops.cli.api import _detail
from sciops.cli.follow import PAUSED, Label
from test_cli_command import RUNS, airflow, clean_env, one_line, run  # noqa: F401 - fixtures

RUN_ID = "manual__2026-12-07T04:14:48.128889+00:00"     # as Airflow and `sciops status` print it
FOLDER = "manual__2026-12-07T04-14-48.128889-00-00"     # its folder under output/ (safe_run_id)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A folder root with project ``cells``: one finished run under its folder name, one refused."""
    root = tmp_path / "root"
    out = root / "cells" / "output" / FOLDER
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"airflow_run_id": RUN_ID, "status": "success", "ended_at": 1}))
    (out / "summary.csv").write_text("image,count\na.tif,3\n")
    (out / "failures.csv").write_text("image,task,attempt,status,error\n")
    refused = root / "cells" / "output" / "manual__refused"
    refused.mkdir()
    (refused / "run.json").write_text(json.dumps({"airflow_run_id": "manual__refused", "status": "refused",
                                                  "reason": "smoke_test: count_nuclei found no nucleus in a.tif"}))
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(root))
    return root


@pytest.mark.parametrize("given", [RUN_ID, FOLDER])
def test_sync_down_takes_the_run_id_as_printed_or_its_folder(capsys, root, tmp_path, given):
    code, out, err = run(capsys, "sync", "down", "cells", given, str(tmp_path / "lan"), "-q")
    assert code == 0 and out.startswith("copy: 3 transferred"), out + err
    assert (tmp_path / "lan" / "output" / FOLDER / "summary.csv").read_text() == "image,count\na.tif,3\n"


@pytest.mark.parametrize("argv,words", [
    (("sync", "down", "cells", "manual__2026-01-01T00:00:00+00:00", "DIR"),
     "project 'cells' has no run 'manual__2026-01-01T00:00:00+00:00'"),
    (("sync", "down", "nope", RUN_ID, "DIR"), "no project 'nope'"),
    (("logs", "nope", RUN_ID), "no project 'nope'"),
    (("results", "nope"), "no project 'nope'"),
    (("ls", "nope"), "no project 'nope'"),
])
def test_a_missing_run_or_project_is_status_2_and_copies_nothing(capsys, root, tmp_path, argv, words):
    argv = [str(tmp_path / "lan") if a == "DIR" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and words in one_line(err) and out == ""
    assert not (tmp_path / "lan").exists()


def test_a_missing_storage_root_is_status_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(tmp_path / "not-there"))
    code, _, err = run(capsys, "sync", "down", "cells", RUN_ID, str(tmp_path / "lan"))
    assert code == 2 and "no storage root" in one_line(err) and "SCIOPS_STORAGE_ROOT" in err


def test_logs_of_a_refused_run_says_why(capsys, root):
    code, out, _ = run(capsys, "logs", "cells", "manual__refused")
    assert code == 0 and out == "run manual__refused refused: smoke_test: count_nuclei found no nucleus in a.tif\n"


def test_logs_of_a_run_refused_before_it_had_a_folder_asks_the_ledger(capsys, root, airflow):
    airflow.ledger = [{"run_id": "manual__2026-12-07T05-00-00-00-00", "project": "cells", "status": "refused",
                       "airflow_run_id": "manual__2026-12-07T05:00:00+00:00",
                       "reason": "file_pattern: no file in cells/input matches '*.png'"}]
    code, out, err = run(capsys, "logs", "cells", "manual__2026-12-07T05:00:00+00:00")
    assert code == 0 and out == ("run manual__2026-12-07T05:00:00+00:00 refused: file_pattern: no file in cells/input "
                                 "matches '*.png'\n"), out + err


def test_status_of_one_run_by_its_folder_name_with_whole_links_and_true_durations(capsys, airflow):
    airflow.ledger = [{"airflow_run_id": RUN_ID, "run_id": FOLDER, "project": "cells", "status": "success",
                       "images_ok": 3, "images_failed": 0, "images_total": 3, "duration_s": 36.0, "cost_usd": 0},
                      {"airflow_run_id": "manual__x", "run_id": "manual__x", "project": "cells", "status": "failed"}]
    airflow.run_doc = {"start_date": "2026-12-07T04:14:50+00:00", "end_date": "2026-12-07T04:15:56+00:00"}
    code, out, err = run(capsys, "status", "cells", FOLDER)
    assert code == 0 and "manual__x" not in out, out + err
    assert "1 min 06 s" in out and "36 s" not in out   # the DAG run's start to its end, not the ledger's phases
    link = f"{airflow.url}/sciops/runs/fiji_project/manual__2026-12-07T04%3A14%3A48.128889%2B00%3A00/report"
    assert f"report {RUN_ID}: {link}\n" in out and "…" not in out
    code, _, err = run(capsys, "status", "cells", "manual__never")
    assert code == 2 and "Airflow knows no run 'manual__never' of project 'cells'" in one_line(err)


def test_wait_says_when_the_dag_is_paused_and_counts_from_the_start(capsys, airflow):
    airflow.paused = True
    airflow.states = ["queued", "queued", "running", "success"]
    airflow.progress = {"images": 3, "done": 0}
    code, out, err = run(capsys, "run", "cells", "--wait")
    assert code == 0 and out.count(PAUSED) == 1, out + err   # said once, not at every poll
    assert out.index(PAUSED) < out.index("fiji_project unpaused: the run goes on")
    assert "0/None" not in out and "3 images" in out


def test_wait_rides_out_an_api_server_restart(capsys, airflow):
    """The stand-in api-server stops after the run's second poll and comes back on the same port 3 s later with
    a new JWT secret (its tokens differ): the command says so, logs in again, and follows the run to its end."""
    from http.server import ThreadingHTTPServer

    airflow.states = ["running"]   # until the restart; then success
    port = airflow.server.server_address[1]

    def restart():
        while sum(r["path"] == f"{RUNS}/manual__1" for r in airflow.requests) < 2:
            time.sleep(0.05)
        airflow.server.shutdown()
        airflow.server.server_close()
        time.sleep(3)
        airflow.states = ["success"]
        airflow.TOKEN = "tok-2"        # the old token is refused now
        airflow.server = ThreadingHTTPServer(("127.0.0.1", port), airflow.handler)
        threading.Thread(target=airflow.server.serve_forever, daemon=True).start()

    threading.Thread(target=restart, daemon=True).start()
    code, out, err = run(capsys, "run", "cells", "--wait")
    assert code == 0 and "cannot reach Airflow" in out and "the run goes on" in out, out + err
    assert "Airflow is back after" in out and "success" in out
    assert sum(r["path"] == "/auth/token" for r in airflow.requests) == 2   # the refused token renewed once


def test_the_label_never_goes_back():
    label = Label()
    seen = [label.see(x) for x in ("queued", "running", "validate", "plan", "running", "validate", "run_array",
                                   "a_new_phase", "collate")]
    assert seen == ["queued", "running", "validate", "plan", "plan", "plan", "run_array", "a_new_phase", "collate"]


def test_a_refused_param_is_one_line_naming_the_field():
    dump = ("Invalid input for param images_per_task: -1 is less than the minimum of 0\n\nFailed validating "
            "'minimum' in schema:\n    {'type': 'integer', 'minimum': 0}\n\nOn instance:\n    -1")
    assert _detail(dump) == "images_per_task: -1 is less than the minimum of 0"
