"""Never a wrong result passed off (issue 35): one run, one folder, one ledger row. Real ImageJ, local processes,
dag.test."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import fresh_dag, task_states

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
