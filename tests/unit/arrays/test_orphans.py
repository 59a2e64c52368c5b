"""Finding a run's arrays by name and cancelling the orphans, on real localq processes (no mocks)."""
from __future__ import annotations

import json
import time

import pytest

from sciops.arrays.commands import LocalRunner
from sciops.arrays.orphans import cancel_orphans, recorded, run_jobs
from sciops.arrays.schedulers.base import ArraySpec
from sciops.arrays.schedulers.local import LocalScheduler
from sciops.errors import SchedulerQueryError


@pytest.fixture
def sched(tmp_path):
    return LocalScheduler(spool=str(tmp_path / "spool"), slots=4)


def submit(sched, tmp_path, name: str, workdir, tasks=(1,)) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    return sched.submit(LocalRunner(), ArraySpec(name=name, command=["sleep", "60"], task_ids=list(tasks),
                                                 log_dir=str(tmp_path / "logs"), workdir=str(workdir)))


def test_only_the_runs_own_arrays_of_other_plans_are_cancelled_and_recorded(tmp_path, sched):
    runner, work = LocalRunner(), tmp_path / "run" / "work"
    old = submit(sched, tmp_path, "sciops-r1-aaaa1111-a1", work, tasks=(1, 2))
    old_retry = submit(sched, tmp_path, "sciops-r1-aaaa1111-a2", work)
    kept = submit(sched, tmp_path, "sciops-r1-bbbb2222-a1", work)                    # the plan to keep
    longer = submit(sched, tmp_path, "sciops-r1-x-cccc3333-a1", work)               # run "r1-x", not "r1"
    elsewhere = submit(sched, tmp_path, "sciops-r1-dddd4444-a1", tmp_path / "other")  # another run folder
    ended = submit(sched, tmp_path, "sciops-r1-eeee5555-a1", work)
    sched.cancel(runner, ended)
    deadline = time.time() + 30
    while ended in {j.job_id for j in sched.queued(runner, "sciops-")} and time.time() < deadline:
        time.sleep(0.1)
    assert {j["job_id"] for j in run_jobs(sched, runner, "r1", str(work))} == {old, old_retry, kept}

    cancelled = cancel_orphans(sched, runner, "r1", str(work) + "/", work, why="superseded", keep_plan="bbbb2222")

    assert sorted(j["job_id"] for j in cancelled) == sorted([old, old_retry])
    assert {(j["plan_id"], j["attempt"]) for j in cancelled} == {("aaaa1111", 1), ("aaaa1111", 2)}
    assert all(j["left_queue"] and j["why"] == "superseded" and j["scheduler"] == "local" for j in cancelled)
    assert {s.value for s in sched.status(runner, old, [1, 2]).values()} == {"cancelled"}
    assert recorded(work) == json.loads((work / "orphans.json").read_text()) == cancelled
    live = {j.job_id for j in sched.queued(runner, "sciops-")}
    assert live == {kept, longer, elsewhere}                      # the others still run
    # a second sweep finds nothing more to cancel, and the record keeps the first
    assert cancel_orphans(sched, runner, "r1", str(work), work, why="again", keep_plan="bbbb2222") == []
    assert len(recorded(work)) == 2
    for job in live:
        sched.cancel(runner, job)


def test_a_scheduler_that_cannot_be_asked_is_not_taken_for_no_jobs(tmp_path):
    class Broken:
        def run(self, argv, **kw):
            from sciops.errors import CommandError

            raise CommandError(argv, 255, "", "ssh: connect to host head port 22: Connection refused")

    sched = LocalScheduler(spool=str(tmp_path / "spool"))
    with pytest.raises(SchedulerQueryError, match="Connection refused"):
        cancel_orphans(sched, Broken(), "r1", str(tmp_path), tmp_path, why="x")
    assert not (tmp_path / "orphans.json").exists()
