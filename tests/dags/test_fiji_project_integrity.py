"""Never a wrong result passed off (issue 35): one run, one folder, one ledger row; a full storage root; a
ledger and a Slack that never answer; a ledger that refuses the row. Real ImageJ, local processes, dag.test."""
from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

from helpers import REPO, fill_up, fresh_dag, task_states

pytestmark = pytest.mark.imagej


def run_as(run_id: str | None, conf: dict):
    """dag.test() under the Airflow run id ``run_id`` (as a trigger through the API or UI may give one)."""
    if run_id is None:
        return fresh_dag().test(run_conf=conf)
    from airflow.models.dagrun import DagRun

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DagRun, "generate_run_id", staticmethod(lambda **_: run_id))
        return fresh_dag().test(run_conf=conf)


def test_two_run_ids_that_shared_a_folder_each_have_their_own_and_a_collision_is_refused(
        airflow_db, make_project, monkeypatch):
    from sciops.accounting import ledger
    from sciops.errors import ConfigError
    from sciops.phases import checks
    from sciops.run.project import safe_run_id

    root = make_project("collide", counts={"a.tif": 3, "b.tif": 5})
    conf = {"project": "collide", "memory": "1G", "smoke_test": False}
    first = run_as("x~1", {**conf, "file_pattern": "a.tif"})
    assert first.state == "success", task_states(first)
    second = run_as("x+1", conf)
    assert second.state == "success", task_states(second)
    folders = {p.name: p for p in (root / "output").iterdir()}
    assert sorted(folders) == sorted({safe_run_id("x~1"), safe_run_id("x+1")}) and "x-1" not in folders
    for run_id, images in (("x~1", {"a.tif": 3}), ("x+1", {"a.tif": 3, "b.tif": 5})):
        run_dir = folders[safe_run_id(run_id)]
        assert (run_dir / ".sciops-run").read_text() == run_id + "\n"   # the marker: whose folder it is
        run = json.loads((run_dir / "run.json").read_text())
        assert run["airflow_run_id"] == run_id and run["status"] == "success"
        # each run's own images, counted by itself (not "already done" from the other's folder)
        summary = pd.read_csv(run_dir / "summary.csv")
        assert dict(zip(summary["image"], summary["count"].astype(int))) == images
    rows = {r["airflow_run_id"]: r for r in ledger.rows(project="collide")}
    assert set(rows) == {"x~1", "x+1"} and rows["x~1"]["images_total"] == 1 and rows["x+1"]["images_total"] == 2
    assert rows["x~1"]["run_id"] != rows["x+1"]["run_id"]

    # two ids that meet in one folder all the same (32 bits of hash, or a folder of an older SciOps):
    # the second is refused in validate, naming both; the first run's files and ledger row stay
    mine = folders[safe_run_id("x~1")]
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    monkeypatch.setattr(checks, "safe_run_id", lambda run_id: mine.name)
    with pytest.raises(ConfigError) as err:
        with checks.refusals(conf, "x^1", "fiji_project", "manual"):
            checks.validate(conf, "x^1")
    assert err.value.fields == ["run_id"] and "'x~1'" in str(err.value) and "'x^1'" in str(err.value)
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    row = next(r for r in ledger.rows(project="collide") if r["run_id"] == mine.name)
    assert row["airflow_run_id"] == "x~1" and row["status"] == "success"


@pytest.mark.timeout(400)
def test_a_full_storage_root_is_said_and_the_run_still_recorded(airflow_db, small_tmpfs, slack_receiver,
                                                                  monkeypatch):
    """The storage root (a 30 MB tmpfs) fills up right after validate: plan cannot write a byte, nor
    record its run.json. The ledger row and the Slack end message still go out, failed, saying which
    path had no space and how much was free; no temp file is left, no document says success."""
    from sciops.accounting import ledger
    from sciops.imaging.synthetic import make_images
    from sciops.reporting import notify

    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(small_tmpfs))
    for d in ("input", "src"):
        (small_tmpfs / "full" / d).mkdir(parents=True)
    make_images(small_tmpfs / "full" / "input", {"a.tif": 3, "b.tif": 5})
    started = notify.run_started

    def started_then_full(info):
        said = started(info)
        fill_up(small_tmpfs)
        return said

    monkeypatch.setattr(notify, "run_started", started_then_full)
    dr = run_as(None, {"project": "full", "memory": "1G", "smoke_test": False})
    states = task_states(dr)
    assert dr.state == "failed" and states["validate"] == "success" and states["plan"] == "failed", states
    assert states["record"] == "success" and states["outcome"] == "failed", states
    [row] = ledger.rows(project="full")
    assert row["status"] == "failed", row
    reason = row["reason"]
    assert "no space left on device: could not write " + str(small_tmpfs / "full" / "output") in reason, reason
    assert f"bytes free of 31,457,280 on the filesystem holding {small_tmpfs}" in reason, reason
    assert "plan" in reason and "run.json not written" in reason
    texts = [p["json"]["text"] for p in slack_receiver]
    assert len(texts) == 2 and "started" in texts[0], texts
    assert texts[1].startswith(":x: SciOps run failed") and "no space left on device" in texts[1], texts[1]
    assert not [n for _, _, names in os.walk(small_tmpfs) for n in names if n.endswith(".tmp")]
    [run_dir] = (small_tmpfs / "full" / "output").iterdir()
    assert not (run_dir / "run.json").exists() and not (run_dir / "report.html").exists()


@pytest.mark.timeout(400)
def test_a_ledger_and_a_slack_that_never_answer_cannot_hold_the_run(airflow_db, make_project, silent_listener,
                                                                      monkeypatch, caplog):
    """Both accept connections and never answer. The run is not wedged in validate (no budget: the ledger
    is not read), the record names the ledger's timeout, the log Slack's, and the DAG run fails."""
    db, slack = silent_listener(), silent_listener()
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", f"postgresql://sciops:pw@127.0.0.1:{db}/sciops_ledger")
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack}", "password": "T0000/B0000/not-a-token"}))
    monkeypatch.setenv("SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("SCIOPS_SLACK_TIMEOUT_SECONDS", "2")
    root = make_project("silent", counts={"a.tif": 3})
    dr = run_as(None, {"project": "silent", "memory": "1G", "smoke_test": False})
    states = task_states(dr)
    assert dr.state == "failed" and states["record"] == "success" and states["outcome"] == "failed", states
    assert all(states[t] == "success" for t in ("validate", "plan", "run_array", "collate")), states
    [run_dir] = (root / "output").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and run["failed_phases"] == ["record"] and run["images"]["ok"] == 1
    assert (f"the ledger (connection sciops_ledger, 127.0.0.1:{db}/sciops_ledger) did not answer within 2 s"
            in run["reason"]), run["reason"]
    assert "Status: <b>failed</b>" in (run_dir / "report.html").read_text()
    slack_said = f"Slack (connection sciops_slack, 127.0.0.1:{slack}) did not answer within 2 s"
    assert caplog.text.count(slack_said) >= 2, caplog.text[-3000:]   # the start message and the end message
    # what outcome failed the DAG run with: both named
    from sciops.errors import SciOpsError
    from sciops.phases.record import outcome

    handoff = dr.get_task_instance("record").xcom_pull(task_ids="record")
    with pytest.raises(SciOpsError) as err:
        outcome(handoff)
    assert str(err.value).startswith(f"run {run['run_id']} ended failed, in record: ledger not written: the ledger "
                                     f"(connection sciops_ledger, 127.0.0.1:{db}/sciops_ledger) did not answer "
                                     "within 2 s"), err.value
    assert f"(also: {slack_said}" in str(err.value)


def test_a_ledger_that_refuses_the_row_fails_the_run_in_every_verdict(airflow_db, make_project, postgres_ledger,
                                                                      slack_receiver, monkeypatch):
    """The real PostgreSQL with a CHECK constraint the run's row breaks: run.json, report.html, the Slack
    end message and the DAG run all say failed, and why."""
    from sqlalchemy import create_engine, text

    from sciops.accounting import ledger

    uri = subprocess.run(["bash", str(REPO / "scripts/testbed/postgres.sh"), "fresh-db", "sciops_irun_refusing"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    url = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    ledger._engines.pop(url, None)
    ledger.engine(url)
    with create_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE sciops_runs ADD CONSTRAINT no_runs_of_refusing CHECK (project <> 'refusing')"))
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", uri)
    root = make_project("refusing", counts={"a.tif": 3, "b.tif": 5})
    dr = run_as(None, {"project": "refusing", "memory": "1G", "smoke_test": False})
    states = task_states(dr)
    assert dr.state == "failed" and states["record"] == "success" and states["outcome"] == "failed", states
    [run_dir] = (root / "output").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and run["failed_phases"] == ["record"], run["failed_phases"]
    assert "the ledger (connection sciops_ledger" in run["reason"] and "refused" in run["reason"]
    assert "no_runs_of_refusing" in run["record_failed"]["ledger"]
    assert "Status: <b>failed</b>" in (run_dir / "report.html").read_text()
    [start, end] = [p["json"]["text"] for p in slack_receiver]
    assert "started" in start and end.startswith(":x: SciOps run failed") and "refused" in end, end
    assert ledger.rows(project="refusing", url=url) == []
