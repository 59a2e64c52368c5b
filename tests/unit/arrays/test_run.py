"""ArrayRun with the real local scheduler: resubmission of failed chunks, re-attach, progress."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sciops.arrays.run import ArrayRun, ArrayState, _ranges
from sciops.errors import JobFailedError
from sciops.arrays.ssh import LocalRunner
from sciops.arrays.schedulers.base import JobState
from sciops.arrays.schedulers.local import LocalScheduler

# A stand-in task runner: fails while its chunk is listed in FAIL (per attempt), else writes statuses.
FAKE_RUNNER = """
import json, os, sys
m = json.load(open(sys.argv[sys.argv.index("--manifest") + 1]))
attempt = int(sys.argv[sys.argv.index("--attempt") + 1])
t = int(os.environ["SCIOPS_TASK_ID"])
rule = m["fail"].get(str(t))
if rule == "always" or (rule == "first" and attempt == 1):
    sys.exit(3)
os.makedirs(m["work_dir"] + "/status", exist_ok=True)
with open(m["work_dir"] + "/status/task-%04d.jsonl" % t, "a") as fh:
    for img in m["chunks"][t - 1]:
        fh.write(json.dumps({"image": img, "status": "ok"}) + "\\n")
"""


def make_manifest(tmp_path: Path, n_tasks: int, fail: dict, max_attempts: int = 3) -> dict:
    work = tmp_path / "work"
    (work / "job").mkdir(parents=True)
    (work / "job" / "sciops_task.py").write_text(FAKE_RUNNER)
    m = {"run_id": "r1", "run_dir": str(tmp_path), "work_dir": str(work), "memory_mb": 1024,
         "chunks": [[f"img{t}_{i}.tif" for i in range(2)] for t in range(1, n_tasks + 1)],
         "max_attempts": max_attempts, "fail": fail}
    (work / "manifest.json").write_text(json.dumps(m))
    return m


def array_run(tmp_path, m, saved):
    sched = LocalScheduler(spool=str(tmp_path / "spool"), slots=2)
    return ArrayRun(sched, LocalRunner(), m, saved.append, poll_seconds=0.2)


def test_only_failed_chunks_are_resubmitted(tmp_path):
    m = make_manifest(tmp_path, 4, {"2": "first", "4": "always"}, max_attempts=3)
    saved = []
    result = array_run(tmp_path, m, saved).run()
    assert result["attempts"] == 3 and result["failed_tasks"] == [4]
    history = json.loads((tmp_path / "work" / "attempts.json").read_text())
    assert [h["tasks"] for h in history] == [[1, 2, 3, 4], [2, 4], [4]]
    assert history[0]["accounting"]["2"]["reason"] == "exit code 3"
    assert [s["attempt"] for s in saved] == [1, 2, 3]   # state saved after every submit
    assert len(list((tmp_path / "spool").iterdir())) == 3


def test_every_task_failing_raises_with_a_summary(tmp_path):
    m = make_manifest(tmp_path, 2, {"1": "always", "2": "always"}, max_attempts=2)
    with pytest.raises(JobFailedError, match=r"every one of 2 task\(s\) failed after 2 attempt\(s\).*exit code 3"):
        array_run(tmp_path, m, []).run()


def test_reattach_does_not_submit_again(tmp_path):
    m = make_manifest(tmp_path, 3, {})
    saved = []
    first = array_run(tmp_path, m, saved)
    state = first.submit([1, 2, 3], 1)          # ... and then the Airflow task died
    again = array_run(tmp_path, m, saved)       # the retry
    result = again.run(ArrayState.from_dict(json.loads(json.dumps(saved[-1]))))
    assert result["job_ids"] == [state.job_id] and result["failed_tasks"] == []
    assert len(list((tmp_path / "spool").iterdir())) == 1   # one job, never two


def test_progress_line(tmp_path):
    m = make_manifest(tmp_path, 2, {})
    run = array_run(tmp_path, m, [])
    from sciops.arrays.schedulers.base import JobState

    from sciops.arrays.workdir import progress_line

    line = progress_line({1: JobState.DONE, 2: JobState.RUNNING}, run.images_done(), run.n_images, 0)
    assert line.startswith("tasks: 1 done, 1 running, 0 ended (awaiting accounting), 0 waiting, 0 failed of 2; images 0/4")


def test_ranges():
    assert _ranges([7, 1, 2, 3, 5]) == "1-3,5,7"


@pytest.mark.parametrize("task_ids,acct,outside", [
    # the whole job qdel'd/scancel'd while running: every task cancelled
    ([1, 2], {1: ("cancelled", "deleted (qdel)"), 2: ("cancelled", "deleted (qdel)")}, True),
    # a pending task deleted: no record at all
    ([1, 2], {1: ("done", ""), 2: ("cancelled", "no accounting record: deleted before it started (qdel)")}, True),
    # a one-task array deleted (scancel of the only chunk): a deletion too, never resubmitted
    ([1], {1: ("cancelled", "cancelled (scancel)")}, True),
    # one task's shell killed (failed 100) while the other finished: a failure, resubmitted
    ([1, 2], {1: ("done", ""), 2: ("failed", "killed by the scheduler: qdel, or a signal (failed 100, exit 137)")},
     False),
    # a real failure among them
    ([1, 2], {1: ("failed", "exit code 1"), 2: ("cancelled", "deleted (qdel)")}, False),
    # a lost node is not a deletion
    ([1], {1: ("lost", "the node was lost")}, False),
])
def test_cancelled_outside(tmp_path, task_ids, acct, outside):
    from sciops.arrays.schedulers.base import TaskAccounting
    from sciops.arrays.schedulers.sge import SGEScheduler

    m = make_manifest(tmp_path, 2, {})
    run = ArrayRun(SGEScheduler(), LocalRunner(), m, [].append)
    accounting = {t: TaskAccounting(t, JobState(s), reason=r) for t, (s, r) in acct.items()}
    failed = [t for t, a in accounting.items() if a.state != JobState.DONE]
    assert run.cancelled_outside(accounting, failed) is outside


def test_a_lost_node_resubmits_without_spending_an_attempt(tmp_path):
    """max_attempts 1: a failure is final, a lost node is not; the resubmission tells the runner which."""
    from sciops.arrays.schedulers.base import TaskAccounting

    m = make_manifest(tmp_path, 3, {}, max_attempts=1)
    saved = []
    run = array_run(tmp_path, m, saved)
    state = ArrayState("j1", 1, [1, 2, 3], 0.0)
    nxt = run.conclude(state, {1: TaskAccounting(1, JobState.DONE), 2: TaskAccounting(2, JobState.LOST, reason="NODE_FAIL"),
                               3: TaskAccounting(3, JobState.FAILED, reason="exit code 1")})
    assert nxt.task_ids == [2] and nxt.attempt == 2
    spool_job = next((tmp_path / "spool").iterdir())
    assert json.loads((spool_job / "job.json").read_text())["env"]["SCIOPS_LOST"] == "2.1"
    result = run.advance(nxt)[1]
    assert result["failed_tasks"] == [3] and result["node_losses"] == 1 and result["attempts"] == 2


SLOW_RUNNER = "import time, sys; time.sleep(float(__import__('os').environ.get('SLOW', '3'))); sys.exit(0)\n"


def test_advance_returns_the_running_state_at_the_deadline_and_ends_later(tmp_path, monkeypatch):
    import time

    m = make_manifest(tmp_path, 1, {})
    (tmp_path / "work" / "job" / "sciops_task.py").write_text(SLOW_RUNNER)
    monkeypatch.setenv("SLOW", "2")
    run = array_run(tmp_path, m, [])
    state = run.start()
    still, result = run.advance(state, deadline=time.time() + 0.5)
    assert still is state and result is None      # gave up at the deadline, the task still running
    still, result = run.advance(state)            # the rest of the wait, from wherever it is taken up
    assert still is None and result["attempts"] == 1 and result["failed_tasks"] == []


def test_a_fast_array_ends_inside_the_worker_window(tmp_path):
    import time

    m = make_manifest(tmp_path, 2, {"2": "first"})
    run = array_run(tmp_path, m, [])
    still, result = run.advance(run.start(), deadline=time.time() + 60)
    assert still is None and result["attempts"] == 2 and result["failed_tasks"] == []


# A stand-in runner that ends as the real one does: its attempt summary with the exit code is its last act.
EXITING_RUNNER = """
import json, os, sys, time
m = json.load(open(sys.argv[sys.argv.index("--manifest") + 1]))
attempt = int(sys.argv[sys.argv.index("--attempt") + 1])
t = int(os.environ["SCIOPS_TASK_ID"])
start = time.time()
time.sleep(1 + 0.5 * t)
os.makedirs(m["work_dir"] + "/status", exist_ok=True)
json.dump({"task": t, "attempt": attempt, "start": start, "end": time.time(), "exit": 0},
          open(m["work_dir"] + "/status/task-%04d.attempt-%d.json" % (t, attempt), "w"))
"""


def test_the_last_wave_is_seen_ending_by_its_exit_files_not_a_poll_later(tmp_path):
    """With a 10-minute poll, the worker's watch and the trigger both end inside a 60 s window: in the last
    wave they look at the running tasks' exit files twice a second (sciops.arrays.watch, rule 3)."""
    import asyncio
    import time

    from sciops.triggers.array import ArrayJobTrigger

    m = make_manifest(tmp_path, 2, {})
    (tmp_path / "work" / "job" / "sciops_task.py").write_text(EXITING_RUNNER)
    sched = LocalScheduler(spool=str(tmp_path / "spool"), slots=2)
    run = ArrayRun(sched, LocalRunner(), m, [].append, poll_seconds=600)

    def started(state):
        """Both tasks running (localq started them): what the watch then sees ending is their exit files."""
        deadline = time.time() + 30
        while set(sched.status(run.runner, state.job_id, [1, 2]).values()) != {JobState.RUNNING}:
            assert time.time() < deadline, "localq did not start the tasks"
            time.sleep(0.05)
        return state

    still, result = run.advance(started(run.start()), deadline=time.time() + 60)
    assert still is None and result["attempts"] == 1 and result["failed_tasks"] == []

    for f in (tmp_path / "work" / "status").glob("*.json"):
        f.unlink()
    state = started(run.submit([1, 2], 1))
    trigger = ArrayJobTrigger(job_id=state.job_id, task_ids=[1, 2], scheduler="local",
                              scheduler_options={"spool": sched.spool, "slots": 2}, ssh_conn_id=None,
                              poll_seconds=600, work_dir=m["work_dir"], attempt=1, min_defer_seconds=0)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(asyncio.wait_for(first_event(), 60))
    assert event["status"] == "ended" and {a["state"] for a in event["accounting"].values()} == {"done"}


def test_trigger_events_wait_for_the_minimum_after_the_deferral():
    """Airflow's stale-executor-event race (sciops.triggers): no event sooner than the hold."""
    import asyncio
    import time

    from sciops.triggers import hold

    t0 = time.time()
    asyncio.run(hold(t0, 0.6))
    assert time.time() - t0 >= 0.6
    slept = []

    async def spy(seconds):
        slept.append(seconds)

    real, asyncio.sleep = asyncio.sleep, spy
    try:
        asyncio.run(hold(time.time() - 10, 0.6))   # deferred long ago: no wait at all
    finally:
        asyncio.sleep = real
    assert slept == []


def test_a_new_plan_starts_afresh_after_a_clear(tmp_path):
    """task_state_store survives a clear: a run planned again must not inherit the old job, spend or deadline."""
    import time

    from sciops.operators.run_array import DEADLINE_KEY, PLAN_KEY, STATE_KEY, FijiArrayOperator

    m = make_manifest(tmp_path, 2, {})
    m.update(backend="local", backend_options={"slots": 2}, plan_id="new")
    path = tmp_path / "work" / "manifest.json"
    path.write_text(json.dumps(m))

    class Store(dict):   # Airflow's task_state_store: get, set, delete
        def set(self, key, value):
            self[key] = value

        def delete(self, key):
            self.pop(key, None)

    old = {"job_id": "local-gone", "attempt": 1, "task_ids": [1, 2], "submitted_at": 0.0, "history": []}
    store = Store({PLAN_KEY: "old", STATE_KEY: old, DEADLINE_KEY: time.time() - 3600})   # its deadline long past
    op = FijiArrayOperator(task_id="run_array", manifest_path=str(path), deferrable=False, poll_seconds=0.2)
    result = op.execute({"task_state_store": store})
    assert result["failed_tasks"] == [] and result["job_ids"] != ["local-gone"]   # submitted anew, not timed out
    assert store[PLAN_KEY] == "new" and store[DEADLINE_KEY] > time.time() and store[STATE_KEY]["job_id"] != "local-gone"
