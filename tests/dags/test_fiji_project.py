"""fiji_project end to end with dag.test(): real ImageJ, real localq processes, local storage."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import fresh_dag, task_states, wrapping_macro

pytestmark = pytest.mark.imagej

# count_nuclei, except that an image whose name holds "_hang." never finishes (CPU busy).
HANG_MACRO = wrapping_macro('if (indexOf(input, "_hang.") >= 0) { n = 0; while (true) n = n + 1; }')


@pytest.fixture
def fiji_dag():
    return fresh_dag()


def run_dag(dag, conf):
    from airflow.utils.state import DagRunState

    dr = dag.test(run_conf=conf)
    return dr, dr.state == DagRunState.SUCCESS


def test_end_to_end_counts_failures_and_hang(airflow_db, fiji_dag, make_project):
    counts = {"n04.tif": 4, "n09.tif": 9, "plate 2/n16.tif": 16, "n21.tif": 21, "n30.tif": 30, "z_hang.tif": 5}
    root = make_project("e2e", counts=counts, size=256)
    (root / "input" / "corrupt.tif").write_bytes((root / "input" / "n04.tif").read_bytes()[:3000])
    (root / "input" / "empty.tif").write_bytes(b"")
    (root / "src" / "count_or_hang.ijm").write_text(HANG_MACRO)
    conf = {"project": "e2e", "macro": "src/count_or_hang.ijm", "images_per_task": 3, "image_timeout_s": 8,
            "stall_seconds": 6, "memory": "1G", "slots": 2}
    dr, ok = run_dag(fiji_dag, conf)
    assert ok, task_states(dr)
    runs = list((root / "output").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    failures = pd.read_csv(run_dir / "failures.csv").set_index("image")
    expected_ok = {k: v for k, v in counts.items() if "_hang" not in k}
    assert summary["count"].astype(int).to_dict() == expected_ok          # counts exact
    assert failures.loc["z_hang.tif", "status"] == "timeout"
    assert failures.loc["corrupt.tif", "status"] == "failed"
    assert failures.loc["empty.tif", "status"] == "failed"
    assert set(summary.index) | set(failures.index) == set(counts) | {"corrupt.tif", "empty.tif"}
    assert not set(summary.index) & set(failures.index)
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == sum(expected_ok.values())
    assert list(results.columns[:3]) == ["image", "task", "attempt"]
    assert (run_dir / "results.parquet").exists()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "success" and run["images"] == {"total": 8, "ok": 5, "failed": 3}
    assert run["imagej_version"].startswith("1.")
    assert len(run["macro"]["sha256"]) == 64 and run["params"]["images_per_task"] == 3
    assert set(run["phases"]) == {"validate", "plan", "run_array", "collate"}
    assert all(p["end"] >= p["start"] for p in run["phases"].values())
    assert list((run_dir / "logs").glob("task-*.log"))

    # a second run of the same project writes its own folder; the first is untouched
    before = (run_dir / "summary.csv").read_bytes()
    dr2, ok2 = run_dag(fiji_dag, {**conf, "file_pattern": "n0*.tif"})
    assert ok2, task_states(dr2)
    assert len(list((root / "output").iterdir())) == 2
    assert (run_dir / "summary.csv").read_bytes() == before


def test_bad_config_fails_in_validate_before_any_work(airflow_db, fiji_dag, make_project):
    root = make_project("bad")
    dr, ok = run_dag(fiji_dag, {"project": "bad", "file_pattern": "../../etc/*"})
    assert not ok
    states = task_states(dr)
    assert states["validate"] == "failed"
    assert states["plan"] == "upstream_failed" and states["run_array"] == "upstream_failed"
    assert not (root / "output").exists()
    # refused runs do not vanish: the ledger (and so the dashboard) has the run and the reason
    from sciops.accounting import ledger
    from sciops.run.project import safe_run_id

    row = next(r for r in ledger.rows(project="bad") if r["run_id"] == safe_run_id(dr.run_id))
    assert row["status"] == "refused" and "file_pattern" in row["reason"] and "inside input/" in row["reason"]
    assert row["cost_usd"] is None and row["report"] is None


def test_broken_macro_fails_the_smoke_run_in_seconds(airflow_db, fiji_dag, make_project):
    root = make_project("broken")
    (root / "src" / "typo.ijm").write_text('x = notDefined + 1;\n')
    dr, ok = run_dag(fiji_dag, {"project": "broken", "macro": "src/typo.ijm", "stall_seconds": 5})
    assert not ok
    states = task_states(dr)
    assert states["validate"] == "failed" and states["run_array"] == "upstream_failed"
    # validate ran far enough to open the run folder: record wrote run.json saying why
    run = json.loads(next((root / "output").glob("*/run.json")).read_text())
    # refused: only validate failed, nothing was spent; the ledger row carries the reason
    assert run["status"] == "refused" and run["failed_phases"] == ["validate"]
    assert "smoke run failed" in run["phases"]["validate"]["error"] and "smoke run failed" in run["reason"]
    assert run["phases"]["validate"]["seconds"] < 120
