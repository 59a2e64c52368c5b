"""The pure array watch (sciops.arrays.watch): answers in, actions out; no Airflow, no I/O, a fake clock."""
from __future__ import annotations

import pytest

from sciops.arrays.schedulers.base import JobState, TaskAccounting
from sciops.arrays.watch import ACCOUNTING, CANCEL, END, EXIT_FILES, SLEEP, STATUS, Watch, drive

R, D, U, E, P = JobState.RUNNING, JobState.DONE, JobState.UNKNOWN, JobState.ERROR, JobState.PENDING
MISSING = (JobState.CANCELLED, "no accounting record: deleted before it started (qdel)")


def kinds(actions):
    return [a.kind for a in actions]


def ok(*tasks):
    return {t: TaskAccounting(t, D, 0, 1.0) for t in tasks}


def test_running_then_ended_by_exit_files():
    w = Watch("7", [1, 2], MISSING, poll_seconds=5, now=0)
    assert kinds(w.start()) == [STATUS]
    assert [(a.kind, a.seconds) for a in w.on_status({1: R, 2: P}, 1)] == [(SLEEP, 5)]
    assert kinds(w.on_status({1: U, 2: U}, 6)) == [EXIT_FILES]
    [end] = w.on_exit_files(ok(1, 2), 6)
    assert end.kind == END and end.event["status"] == "ended" and set(end.event["accounting"]) == {"1", "2"}


def test_a_failed_status_query_is_not_done():
    w = Watch("7", [1], MISSING, now=0)
    assert kinds(w.on_status(None, 1)) == [EXIT_FILES]   # unknown → look, never "done"
    assert kinds(w.on_exit_files(None, 1)) == [ACCOUNTING]
    assert [(a.kind, a.seconds) for a in w.on_accounting({}, 2)] == [(SLEEP, 0.5)]   # ask again soon


def test_accounting_lag_then_the_missing_record_verdict_after_the_grace():
    w = Watch("7", [1, 2], MISSING, grace_seconds=120, now=0)
    w.on_status({1: U, 2: U}, 10)
    assert kinds(w.on_accounting(ok(1), 100)) == [SLEEP]          # task 2 not recorded yet
    [end] = w.on_accounting(ok(1), 131)                           # 121 s after the queue emptied
    assert end.event["accounting"]["2"]["state"] == "cancelled" and "qdel" in end.event["accounting"]["2"]["reason"]


def test_a_task_back_in_the_queue_resets_the_grace():
    w = Watch("7", [1], MISSING, grace_seconds=120, now=0)
    w.on_status({1: U}, 10)
    w.on_status({1: R}, 20)                                       # requeued (Slurm REQUEUED, SGE reschedule)
    w.on_status({1: U}, 200)
    assert kinds(w.on_accounting({}, 250)) == [SLEEP]             # 50 s since it left again: not yet


def test_stuck_tasks_get_one_cancel_and_are_failed_without_waiting():
    w = Watch("7", [1, 2], MISSING, now=0)
    actions = w.on_status({1: D, 2: E}, 1)
    assert kinds(actions) == [CANCEL, ACCOUNTING] and "stuck" in actions[0].reason
    assert kinds(w.on_status({1: U, 2: E}, 2)) == [ACCOUNTING]   # cancelled once only
    [end] = w.on_accounting(ok(1), 3)
    assert end.event["accounting"]["2"]["state"] == "failed" and "Eqw" in end.event["accounting"]["2"]["reason"]


def test_the_budget_cap_cancels_before_the_spend_could_pass_it():
    """Cancel when the spend plus one more poll and the stop at the present rate would pass the cap."""
    from sciops.arrays.watch import STOP_SECONDS

    budget = {"budget_usd": 20.0, "spent_usd": 0.5, "task_rate_usd_per_hour": 3600.0, "fixed_rate_usd_per_hour": 0.0}
    w = Watch("7", [1, 2], MISSING, poll_seconds=1, budget=budget, now=100)
    # 1 task at 1 USD/s: 0.5 + 2 = 2.5 spent, + 1 × (1 + 5) = 8.5 by the stop: carry on
    assert kinds(w.on_status({1: R, 2: P}, 102)) == [SLEEP]
    # 2 tasks: 2.5 + 2 × 3 = 8.5 spent, + 2 × (1 + 5) = 20.5 > 20: cancel now, not after the cap
    actions = w.on_status({1: R, 2: R}, 105)
    assert kinds(actions) == [CANCEL, END]
    event = actions[1].event
    assert event["status"] == "budget_exceeded" and event["spent_usd"] == pytest.approx(8.5)
    assert event["projected_usd"] == pytest.approx(8.5 + 2 * (1 + STOP_SECONDS)) and event["projected_usd"] > 20
    assert event["running_tasks"] == 2 and budget["spent_usd"] == 0.5   # the caller's dict is not changed
    # nothing running: only the spend itself can pass the cap
    idle = Watch("8", [1], MISSING, poll_seconds=60, budget={**budget, "spent_usd": 19.9}, now=100)
    assert kinds(idle.on_status({1: P}, 1000)) == [SLEEP]


def test_spend_counts_from_since():
    budget = {"budget_usd": 100.0, "spent_usd": 0.0, "task_rate_usd_per_hour": 3600.0, "since": 50.0}
    w = Watch("7", [1], MISSING, budget=budget, now=100)
    w.on_status({1: R}, 101)
    assert w.spent_usd == pytest.approx(51.0)   # counted from 50 (the submission), not from 100


def test_the_deadline_cancels_and_ends():
    w = Watch("7", [1], MISSING, deadline=1000.0, now=0)
    assert kinds(w.on_status({1: R}, 999)) == [SLEEP]
    actions = w.on_status({1: R}, 1001)
    assert kinds(actions) == [CANCEL, END] and actions[1].event["status"] == "timeout"


def test_drive_runs_the_loop_with_a_fake_clock():
    answers = iter([{1: P}, {1: R}, {1: U}])
    clock = [0.0]
    calls = []

    def sleep(s):
        calls.append(("sleep", s))
        clock[0] += s

    event = drive(Watch("7", [1], MISSING, poll_seconds=5, now=0), status=lambda: next(answers),
                  exit_files=lambda: None, accounting=lambda: ok(1), cancel=lambda r: calls.append(("cancel", r)),
                  clock=lambda: clock[0], sleep=sleep)
    assert event["status"] == "ended" and calls == [("sleep", 5), ("sleep", 5)]


def test_drive_stops_at_the_worker_window_and_cancels_past_the_deadline():
    clock = [0.0]
    w = Watch("7", [1], MISSING, poll_seconds=5, now=0)
    assert drive(w, status=lambda: {1: R}, exit_files=lambda: None, accounting=lambda: {}, cancel=lambda r: None,
                 stop_at=12, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s)) is None
    cancelled = []
    w = Watch("7", [1], MISSING, poll_seconds=5, deadline=12, now=0)
    event = drive(w, status=lambda: {1: R}, exit_files=lambda: None, accounting=lambda: {},
                  cancel=cancelled.append, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert event["status"] == "timeout" and cancelled == ["the run's timeout passed"]


def test_the_last_wave_sleeps_wake_on_the_exit_files_of_the_tasks_not_ended():
    """Few tasks left, queued ones included (a task another slot's runner chained exits as soon as it starts):
    the sleep wakes once all of them wrote an exit file."""
    from sciops.arrays.watch import WAKE_MAX_TASKS

    w = Watch("7", [1, 2, 3], MISSING, poll_seconds=5, now=0)
    [sleep] = w.on_status({1: R, 2: R, 3: P}, 1)
    assert sleep.kind == SLEEP and sleep.wake == (1, 2, 3)
    [sleep] = w.on_status({1: D, 2: R, 3: R}, 6)
    assert sleep.kind == SLEEP and sleep.seconds == 5 and sleep.wake == (2, 3)
    many = list(range(1, WAKE_MAX_TASKS + 2))
    big = Watch("8", many, MISSING, now=0)
    assert big.on_status({t: R for t in many}, 1)[0].wake == ()   # too many files to look at twice a second
    assert big.on_status({t: (D if t > 2 else P) for t in many}, 2)[0].wake == (1, 2)


def test_drive_wakes_in_the_last_wave_when_the_exit_files_are_written():
    from sciops.arrays.watch import WAKE_SECONDS

    answers = iter([{1: D, 2: R}, {1: D, 2: D}])
    clock = [0.0]
    looked = []

    def sleep(s):
        clock[0] += s

    def exited(tasks):
        looked.append((clock[0], tasks))
        return clock[0] >= 1.2   # task 2's runner wrote its exit file at 1.2 s

    event = drive(Watch("7", [1, 2], MISSING, poll_seconds=60, now=0), status=lambda: next(answers),
                  exit_files=lambda: ok(1, 2), accounting=lambda: {}, cancel=lambda r: None,
                  clock=lambda: clock[0], sleep=sleep, exited=exited)
    assert event["status"] == "ended"
    assert [t for _, t in looked] == [(2,)] * 3 and clock[0] == pytest.approx(3 * WAKE_SECONDS)   # not 60 s
    # a loop that cannot read the exit files sleeps the whole poll
    clock[0] = 0.0
    answers = iter([{1: D, 2: R}, {1: D, 2: D}])
    drive(Watch("7", [1, 2], MISSING, poll_seconds=60, now=0), status=lambda: next(answers),
          exit_files=lambda: ok(1, 2), accounting=lambda: {}, cancel=lambda r: None,
          clock=lambda: clock[0], sleep=sleep)
    assert clock[0] == 60


def test_the_worker_window_waits_for_the_last_wave_exit_files_until_it_closes():
    clock = [0.0]

    def sleep(s):
        clock[0] += s

    def watch_to(stop_at, exits_at):
        clock[0] = 0.0
        answers = iter([{1: R}, {1: D}])
        return drive(Watch("7", [1], MISSING, poll_seconds=60, now=0), status=lambda: next(answers),
                     exit_files=lambda: ok(1), accounting=lambda: {}, cancel=lambda r: None, stop_at=stop_at,
                     clock=lambda: clock[0], sleep=sleep, exited=lambda tasks: clock[0] >= exits_at)

    assert watch_to(stop_at=30, exits_at=2)["status"] == "ended"       # a 60 s poll, but it ended at 2 s
    assert watch_to(stop_at=30, exits_at=45) is None and clock[0] == 30  # still running when the window closes
