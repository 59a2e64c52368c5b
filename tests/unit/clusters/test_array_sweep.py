"""The array sweep over run folders (sciops.clusters.sweeper.sweep_runs): which runs it reaches for, and how."""
from __future__ import annotations

import json

from sciops.clusters.sweeper import running_arrays, sweep_runs
from sciops.phases import phase_end, phase_start
from sciops.run.project import write_json


def run_folder(root, run_id: str, backend: str, options: dict, airflow_run_id: str = "manual__over",
               running: bool = True):
    run_dir = root / "p" / "output" / run_id
    write_json(run_dir / "work" / "manifest.json", {
        "run_id": run_id, "run_dir": str(run_dir), "work_dir": str(run_dir / "work"), "chunks": [["a.tif"]],
        "backend": backend, "backend_options": options, "plan_id": "aaaa1111", "airflow_run_id": airflow_run_id,
        "dag_id": "fiji_project"})
    phase_start(run_dir, "run_array")
    if not running:
        phase_end(run_dir, "run_array")
    return run_dir


def test_which_runs_are_reached_for_and_what_is_recorded(tmp_path):
    pcluster = run_folder(tmp_path, "r-pc", "parallelcluster", {"ssh_conn_id": "head", "host": "10.0.0.9"})
    unknown = run_folder(tmp_path, "r-bad", "no-such-backend", {})
    old = run_folder(tmp_path, "r-old", "local", {"slots": 1}, airflow_run_id="")   # planned before manifests said
    live = run_folder(tmp_path, "r-live", "local", {"slots": 1}, airflow_run_id="manual__live")
    done = run_folder(tmp_path, "r-done", "local", {"slots": 1}, running=False)
    empty = run_folder(tmp_path, "r-empty", "local", {"slots": 1})                  # nothing of it in localq
    assert done not in running_arrays([tmp_path])
    asked = []

    def is_active(dag_id, run_id):
        asked.append(run_id)
        return run_id == "manual__live"

    out = sweep_runs([tmp_path], is_active)
    assert sorted(r["run_id"] for r in out["kept"]) == ["r-live", "r-old"]
    assert "" not in asked                                                          # no DAG run named: not asked
    assert sorted(r["run_id"] for r in out["ended"]) == ["r-empty", "r-pc"] and out["cancelled"] == []
    [err] = out["errors"]
    assert err["run_id"] == "r-bad" and "unknown backend" in err["error"]
    for run_dir, status, words in ((pcluster, "failed", "deleted by the cluster sweep"),
                                   (empty, "failed", "no job of it left in the queue"),
                                   (unknown, "running", None), (old, "running", None), (live, "running", None)):
        phase = json.loads((run_dir / "work" / "phases" / "run_array.json").read_text())
        assert phase["status"] == status, run_dir
        assert words is None or (words in phase["error"] and "manual__over is over" in phase["error"])
    assert not (pcluster / "work" / "orphans.json").exists()                        # nothing was cancelled
