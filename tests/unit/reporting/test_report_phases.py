"""report.html's phases (sciops.reporting.report.phase_account): they and Airflow's time between them make the
run's wall time, whatever overlaps, fails or never started (issue 37: phases of ~20 s shown for an 83 s run)."""
from __future__ import annotations

import pytest

from sciops.reporting.report import phase_account

T0 = 1_800_000_000.0


def _phases(**spans):
    return {name: {"start": T0 + a, "end": T0 + b, "status": "success"} for name, (a, b) in spans.items()}


def test_the_time_between_phases_is_named_and_everything_adds_up_to_the_wall_time():
    doc = {"dag_run_started": T0 - 30, "recorded_at": T0 + 53,   # an 83 s run with 20 s of phases
           "phases": _phases(validate=(0, 3), plan=(8, 9), run_array=(14, 28), collate=(33, 35))}
    acc = phase_account(doc)
    assert [r["phase"] for r in acc["rows"]] == ["validate", "plan", "run_array", "collate"]
    assert [r["started"] for r in acc["rows"]] == ["after 30 s", "after 38 s", "after 44 s", "after 1 min 03 s"]
    assert acc["wall"] == pytest.approx(83) and acc["between"] == pytest.approx(63) and acc["overlap"] == 0
    assert acc["gaps"] == [(0, 30), (33, 5), (39, 5), (58, 5), (65, 18)]
    assert [(name, start) for name, start, _, _ in acc["chart_rows"]] == [("validate", 30), ("plan", 38),
                                                                         ("run_array", 44), ("collate", 63)]


def test_phases_at_once_count_once_and_a_failed_or_unstarted_phase_is_still_listed():
    phases = _phases(collate=(0, 10), stage_out=(12, 20), teardown=(14, 18))
    phases["teardown"]["status"] = "failed"
    phases["sync_down"] = {"status": "failed", "error": "its task died"}   # no start: it never began
    acc = phase_account({"phases": phases})   # no DAG run start or record time (an older run.json)
    assert acc["wall"] == 20 and acc["between"] == 2 and acc["overlap"] == 4 and not acc["from_dag_run"]
    assert [r["phase"] for r in acc["rows"]] == ["collate", "stage_out", "teardown", "sync_down"]
    assert acc["rows"][-1] == {"phase": "sync_down", "started": "—", "took": "—", "status": "failed"}
    assert [failed for *_, failed in acc["chart_rows"]] == [False, False, True]


def test_a_phase_still_running_at_record_ends_there():
    acc = phase_account({"dag_run_started": T0, "recorded_at": T0 + 50,
                         "phases": {"run_array": {"start": T0 + 10, "status": "running"}}})
    assert acc["wall"] == 50 and acc["between"] == 10 and acc["rows"][0]["took"] == "40 s"
