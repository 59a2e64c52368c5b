"""The local scheduler against real processes started by localq (no mocks)."""
from __future__ import annotations

import json
import time

import pytest

from sciops.arrays.ssh import LocalRunner
from sciops.arrays.schedulers.base import ArraySpec, JobState
from sciops.arrays.schedulers.local import LocalScheduler


def wait_finished(sched, runner, job_id, tasks, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = sched.status(runner, job_id, tasks)
        if all(s.finished for s in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished: {states}")


@pytest.fixture
def sched(tmp_path):
    return LocalScheduler(spool=str(tmp_path / "spool"), slots=2)


def spec(tmp_path, command, tasks, **kw):
    return ArraySpec(name="t", command=command, task_ids=tasks, log_dir=str(tmp_path / "logs"),
                     workdir=str(tmp_path), **kw)


def test_submit_status_accounting(tmp_path, sched):
    runner = LocalRunner()
    # odd tasks exit 1, even ones 0; task 4 is killed by a signal
    cmd = ["sh", "-c", 'if [ "$SCIOPS_TASK_ID" = 4 ]; then kill -9 $$; fi; exit $((SCIOPS_TASK_ID % 2))']
    job_id = sched.submit(runner, spec(tmp_path, cmd, [1, 2, 3, 4]))
    assert job_id.startswith("local-")
    states = wait_finished(sched, runner, job_id, [1, 2, 3, 4])
    assert states == {1: JobState.FAILED, 2: JobState.DONE, 3: JobState.FAILED, 4: JobState.FAILED}
    acct = sched.accounting(runner, job_id, [1, 2, 3, 4])
    assert acct[1].exit_code == 1 and acct[1].reason == "exit code 1"
    assert acct[2].exit_code == 0 and acct[2].state == JobState.DONE
    assert acct[4].reason == "killed by signal 9"
    assert all(a.seconds is not None and a.seconds >= 0 for a in acct.values())
    assert (tmp_path / "logs").is_dir()


def test_slot_limit_and_environment(tmp_path, sched):
    runner = LocalRunner()
    out = tmp_path / "ran"
    out.mkdir()
    cmd = ["sh", "-c", f'date +%s.%N > {out}/$SCIOPS_TASK_ID.start; echo "$EXTRA" > {out}/$SCIOPS_TASK_ID.env; '
                       f'sleep 0.6; date +%s.%N > {out}/$SCIOPS_TASK_ID.end']
    job_id = sched.submit(runner, spec(tmp_path, cmd, [1, 2, 3, 4, 5], env={"EXTRA": "hello world"}))
    wait_finished(sched, runner, job_id, [1, 2, 3, 4, 5])
    spans = [(float((out / f"{t}.start").read_text()), float((out / f"{t}.end").read_text())) for t in range(1, 6)]
    # never more than 2 (the slots) at once
    for t in sorted(s for s, _ in spans):
        assert sum(1 for s, e in spans if s <= t < e) <= 2
    assert (out / "3.env").read_text().strip() == "hello world"


def test_status_is_one_call_whatever_the_size(tmp_path, sched):
    calls = []

    class CountingRunner(LocalRunner):
        def run(self, argv, **kw):
            calls.append(argv)
            return super().run(argv, **kw)

    runner = CountingRunner()
    job_id = sched.submit(runner, spec(tmp_path, ["true"], list(range(1, 51))))
    calls.clear()
    states = sched.status(runner, job_id, list(range(1, 51)))
    assert len(calls) == 1 and len(states) == 50


def test_cancel_running_and_pending(tmp_path, sched):
    runner = LocalRunner()
    job_id = sched.submit(runner, spec(tmp_path, ["sleep", "30"], [1, 2, 3]))
    time.sleep(0.5)
    sched.cancel(runner, job_id)
    states = wait_finished(sched, runner, job_id, [1, 2, 3], timeout=10)
    assert set(states.values()) == {JobState.CANCELLED}
    sched.cancel(runner, job_id)  # cancelling a job that is gone is harmless


def test_lost_server_means_failed_not_done(tmp_path, sched):
    import os
    import signal

    runner = LocalRunner()
    job_id = sched.submit(runner, spec(tmp_path, ["sleep", "30"], [1]))
    job = json.loads((tmp_path / "spool" / job_id / "job.json").read_text())
    deadline = time.time() + 10
    while sched.status(runner, job_id, [1]) != {1: JobState.RUNNING} and time.time() < deadline:
        time.sleep(0.1)
    os.kill(job["server_pid"], signal.SIGKILL)
    time.sleep(0.3)
    assert sched.status(runner, job_id, [1]) == {1: JobState.FAILED}
    task = json.loads((tmp_path / "spool" / job_id / "tasks" / "1.json").read_text())
    os.killpg(task["pid"], signal.SIGKILL)


def test_unknown_state_maps_to_unknown(sched, caplog):
    states = sched.parse_status('{"1": "weird", "2": "done"}', [1, 2, 3])
    assert states == {1: JobState.UNKNOWN, 2: JobState.DONE, 3: JobState.UNKNOWN}
    assert "unknown job state 'weird'" in caplog.text


def test_find_by_name_and_a_retry_that_looks_first(tmp_path, sched):
    runner = LocalRunner()
    assert sched.find(runner, "t") is None                        # an empty (even missing) spool
    job_id = sched.submit(runner, spec(tmp_path, ["true"], [1]))
    wait_finished(sched, runner, job_id, [1])
    assert sched.find(runner, "t") == job_id                      # ended jobs stay in the spool
    assert sched.submit(runner, spec(tmp_path, ["true"], [1]), look_first=True) == job_id   # not again
    other = sched.submit(runner, spec(tmp_path, ["true"], [1]))   # without look_first: a second job
    from sciops.errors import SubmitError

    with pytest.raises(SubmitError, match="submitted more than once"):
        sched.find(runner, "t")
    assert other != job_id


def test_schedulers_import_nothing_of_ssh_or_airflow():
    """The wall (STYLE 5): schedulers build argv and parse output; SSH and Airflow stay out."""
    import subprocess
    import sys

    code = ("import sys; import sciops.arrays.schedulers.sge, sciops.arrays.schedulers.slurm, sciops.arrays.schedulers.local, "
            "sciops.arrays.watch; print(sorted(m for m in ('airflow', 'paramiko', 'asyncssh', 'sciops.arrays.ssh') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
