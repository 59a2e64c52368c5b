"""sciops_node.contract: the heap rule, status lines, the file layout, the manifest."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from sciops_node import contract
from sciops_node.contract import Manifest

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"


@pytest.mark.parametrize("granted,heap", [(512, 212), (1024, 724), (2048, 1638), (8192, 6553), (300, 128)])
def test_heap_leaves_room_for_the_jvm(granted, heap):
    assert contract.heap_mb(granted) == heap
    assert contract.heap_mb(granted) <= max(128, granted - 300)


def test_status_file_last_line_wins_and_torn_lines_are_ignored(tmp_path):
    path = tmp_path / "status" / "task-0001.jsonl"
    contract.append_status(str(path), {"image": "a.tif", "status": "failed"})
    contract.append_status(str(path), {"image": "a.tif", "status": "ok"})
    contract.append_status(str(path), {"image": "b.tif", "status": "timeout"})
    with open(path, "a") as fh:
        fh.write('{"image": "c.tif", "sta')  # a write cut short by kill -9
    got = contract.read_statuses(str(path))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "timeout"}
    assert contract.read_statuses(str(tmp_path / "missing.jsonl")) == {}


def test_the_layout_is_the_one_on_disk():
    """The names earlier runs left on disk (and the Airflow side globs for): a run's files must not move."""
    w, r = "/run/work", "/run"
    assert contract.manifest_path(w) == "/run/work/manifest.json"
    assert contract.status_path(w, 7) == "/run/work/status/task-0007.jsonl"
    assert contract.count_path(w, 7) == "/run/work/status/task-0007.count.json"
    assert contract.attempt_summary_path(w, 7, 2) == "/run/work/status/task-0007.attempt-2.json"
    assert contract.claim_path(w, 7) == "/run/work/status/task-0007.claim"
    assert contract.image_output_dir(w, "a/b.tif") == "/run/work/images/a/b.tif"
    assert contract.task_log_path(r, 7, 2) == "/run/logs/task-0007.attempt-2.log"
    assert contract.smoke_log_path(r) == "/run/logs/smoke.log"
    assert contract.tables_dir(w) == "/run/work/tables"
    assert contract.chunk_table_name(7, 2, "results") == "task-0007.attempt-2.results.csv"
    assert contract.chunk_table_name(7, 2, "summary", 3) == "task-0007.attempt-2.summary.part3.csv"
    assert Path(contract.attempt_summary_path(w, 7, 2)).match(contract.ATTEMPT_SUMMARY_GLOB)
    assert Path(contract.status_path(w, 7)).match(contract.STATUS_GLOB)
    assert not Path(contract.count_path(w, 7)).match(contract.STATUS_GLOB)


# -- the manifest ------------------------------------------------------------------------------------

#: A manifest as ``plan`` writes it today (phases/plan.py: manifest_of, then unreadable, budget, plan_id).
PLANNED = {
    "run_id": "20240501-1200-a1b2", "project": "demo", "run_dir": "/data/demo/output/20240501-1200-a1b2",
    "work_dir": "/data/demo/output/20240501-1200-a1b2/work", "input_dir": "/data/demo/input",
    "macro_path": "/data/demo/output/20240501-1200-a1b2/work/job/count_nuclei.ijm",
    "driver_path": "/data/demo/output/20240501-1200-a1b2/work/job/driver.ijm",
    "macro_args": {"threshold": "Otsu", "watershed": "true"}, "macro_argument": None, "channel": "all",
    "expected_outputs": ["results.csv", "summary.csv"], "chunks": [["a.tif", "b.tif"], ["c.lif#0", "c.lif#1"]],
    "bioformats_memo": "/data/demo/output/20240501-1200-a1b2/work/bfmemo",
    "memory_mb": 2048, "image_timeout_s": 600, "stall_seconds": 60, "qc_images": "sample", "max_attempts": 3, "backend": "existing",
    "backend_options": {"ssh_conn_id": "sciops_cluster", "scheduler": "sge", "python": "python3",
                        "scheduler_options": {"queue": None, "exclusive": False}},
    "launcher": {"kind": "imagej1", "java": "java", "ij_jar": "/usr/share/java/ij.jar", "xvfb": "Xvfb"},
    "unreadable": {}, "budget": None, "plan_id": "3f9c2a1b",
    "airflow_run_id": "manual__2024-05-01T12:00:00+00:00", "dag_id": "fiji_project",
}


def test_a_planned_manifest_round_trips(tmp_path):
    path = tmp_path / "work" / "manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps(PLANNED, indent=1))
    m = Manifest.load(str(path))
    assert m.chunks == PLANNED["chunks"] and m.launcher["kind"] == "imagej1" and m.plan_id == "3f9c2a1b"
    assert m.extra == {} and m.scratch_dir is None
    assert m.to_dict() == PLANNED                                  # plain JSON, the same keys and values
    assert Manifest.from_dict(m.to_dict()) == m
    again = tmp_path / "again.json"
    m.dump(str(again))
    assert json.loads(again.read_text()) == PLANNED and Manifest.load(str(again)) == m


def test_an_older_or_smaller_manifest_loads_with_defaults():
    """A manifest of before plan_id/budget/unreadable, or a test's: the defaults the runner always used."""
    old = {k: v for k, v in PLANNED.items() if k not in ("plan_id", "budget", "unreadable")}
    m = Manifest.from_dict(old)
    assert m.plan_id is None and m.budget is None and m.unreadable == {}
    small = Manifest.from_dict({"work_dir": "/w", "run_dir": "/r", "chunks": [["a.tif"]]})
    assert (small.expected_outputs, small.memory_mb, small.image_timeout_s, small.stall_seconds) == \
        (["*.csv"], 2048, 600, 60)
    assert small.macro_args == {} and small.channel == "all" and small.launcher is None
    with pytest.raises(ValueError, match="input_dir, macro_path, driver_path, launcher"):
        small.require_launch()
    Manifest.from_dict(PLANNED).require_launch()
    with pytest.raises(ValueError, match="chunks"):
        Manifest.from_dict({"work_dir": "/w", "run_dir": "/r"})


def test_unknown_keys_are_kept_and_scratch_dir_only_when_set():
    doc = dict(PLANNED, fail={"a.tif": 1}, scratch_dir="/scratch")
    m = Manifest.from_dict(doc)
    assert m.extra == {"fail": {"a.tif": 1}} and m.scratch_dir == "/scratch"
    assert m.to_dict() == doc
    assert Manifest.of(m) is m and Manifest.of(doc) == m


def _manifest_keys_written_by_the_airflow_side():
    """The keys ``manifest_of`` passes to ``Manifest(...)`` and the ones its callers in plugins/ add (``**more``).

    The Airflow side builds the typed Manifest itself, so a key that is no field fails at once (TypeError);
    this pins that plan writes every field a task reads."""
    keys = set()
    for path in PLUGINS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "manifest_of":
                for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)
                             and getattr(n.func, "id", None) == "Manifest"):
                    for arg in call.keywords:
                        if arg.arg is None and isinstance(arg.value, ast.Dict):
                            keys |= {k.value for k in arg.value.keys if isinstance(k, ast.Constant)}
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "manifest_of" and \
                    "plan" in path.name:
                keys |= {kw.arg for kw in node.keywords}
    return keys


def test_every_key_the_airflow_side_writes_is_a_field():
    written = _manifest_keys_written_by_the_airflow_side()
    assert "work_dir" in written and "plan_id" in written            # the parse found plan's manifest
    fields = {f.name for f in dataclasses.fields(Manifest)} - {"extra"}
    assert written == fields - {"scratch_dir"}                        # scratch_dir: a site's or a test's, not plan's
    assert set(PLANNED) == written


def test_the_runner_reads_the_manifest_only_through_manifest():
    """No ``m["key"]`` / ``m.get("key")`` left in the node's code: every key is a field (with its default)."""
    job = Path(contract.__file__).parents[1]
    for path in [job / "sciops_task.py", *job.joinpath("sciops_node").glob("*.py")]:
        found = re.findall(r"\b(?:m|manifest)(?:\[|\.get\()", path.read_text(encoding="utf-8"))
        assert not found, f"{os.path.relpath(path, job)}: {found}"
