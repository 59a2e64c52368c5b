"""The slurm scheduler's argv and parsers, on output captured from this machine's Slurm 22.05."""
from __future__ import annotations

from pathlib import Path

import pytest

from sciops.errors import SubmitError
from sciops.arrays.schedulers.base import ArraySpec, JobState
from sciops.arrays.schedulers.slurm import SlurmScheduler, _seconds

FIX = Path(__file__).resolve().parents[3] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def test_submit_argv_keeps_chunk_ids_and_quotes_the_wrapped_command():
    sched = SlurmScheduler(partition="batch", account="imaging", exclusive=True, gres="fiji:1")
    spec = ArraySpec(name="sciops-r1", command=["python3", "/w w/job/sciops_task.py", "--manifest", "/w w/m.json"],
                     task_ids=[2, 5, 9], log_dir="/w w/logs", workdir="/w w", memory_mb=1536, cpus=2,
                     time_limit_s=90, max_parallel=4, env={"SCIOPS_ATTEMPT": "2"})
    argv = sched.submit_argv(spec)
    assert argv[:3] == ["sbatch", "--parsable", "--array=2,5,9%4"]
    assert "--export=ALL,SCIOPS_ATTEMPT=2" in argv and "--mem=1536M" in argv and "--cpus-per-task=2" in argv
    assert "--time=2" in argv                       # whole minutes, rounded up
    assert {"--exclusive", "--gres=fiji:1", "--partition=batch", "--account=imaging", "--no-requeue"} <= set(argv)
    assert "--output=/w w/logs/%x.%A.%a.out" in argv
    assert argv[-1] == "--wrap=python3 '/w w/job/sciops_task.py' --manifest '/w w/m.json'"
    with pytest.raises(SubmitError):
        sched.submit_argv(ArraySpec(name="n", command=["true"], task_ids=[1], log_dir="/l", workdir="/w",
                                    env={"X": "a,b"}))


def test_parse_submit():
    assert SlurmScheduler().parse_submit(fixture("sbatch.txt")).isdigit()
    assert SlurmScheduler().parse_submit("77;cluster\n") == "77"
    with pytest.raises(SubmitError):
        SlurmScheduler().parse_submit("sbatch: error: Batch job submission failed")


def test_parse_status_running_and_pending():
    job = fixture("sbatch.txt").strip()
    states = SlurmScheduler().parse_status(fixture("squeue_running_pending.txt"), [1, 2, 3, 4], job)
    assert states[1] == JobState.RUNNING and states[2] == JobState.RUNNING
    assert states[3] == JobState.PENDING and states[4] == JobState.PENDING


def test_job_gone_from_squeue_is_unknown_never_done():
    assert SlurmScheduler().parse_status("", [1, 2], "5") == {1: JobState.UNKNOWN, 2: JobState.UNKNOWN}


def test_accounting_exit_signal_cancel_and_timeout():
    acct = SlurmScheduler().parse_accounting(fixture("sacct_mixed.txt"), [1, 2, 3, 4])
    assert acct[1].state == JobState.DONE and acct[1].exit_code == 0
    assert acct[2].state == JobState.FAILED and acct[2].reason == "exit code 1"
    assert acct[3].state == JobState.FAILED and acct[3].reason == "killed by signal 9"   # kill -9 of the script
    assert 4 not in acct          # scancel'd while pending: Slurm keeps no record
    cancelled = SlurmScheduler().parse_accounting(fixture("sacct_cancelled.txt"), [1, 2])
    assert {a.state for a in cancelled.values()} == {JobState.CANCELLED}
    assert cancelled[1].max_rss_mb == pytest.approx(2744 / 1024, abs=1e-3)   # from the .batch step
    timeout = SlurmScheduler().parse_accounting(fixture("sacct_timeout.txt"), [1])
    assert timeout[1].state == JobState.FAILED and "time limit" in timeout[1].reason


def test_a_lost_node_is_lost_not_failed():
    """scontrol update state=down under a --no-requeue array (saved from the testbed)."""
    acct = SlurmScheduler().parse_accounting(fixture("sacct_node_fail.txt"), [1, 2])
    assert {a.state for a in acct.values()} == {JobState.LOST} and "NODE_FAIL" in acct[1].reason


@pytest.mark.parametrize("text,secs", [("00:00:05", 5), ("01:02:03", 3723), ("1-00:00:01", 86401), ("02:03", 123)])
def test_elapsed(text, secs):
    assert _seconds(text) == secs


def test_the_jobs_of_a_run_are_listed_by_name_prefix_with_their_folders():
    """``squeue --me`` (captured: an array pending and running, another job): the prefix's jobs, each once."""
    from sciops.arrays.ssh import CommandResult

    sched = SlurmScheduler()
    assert sched.queue_list_argv("x") == ["squeue", "--noheader", "--me", "--format=%F|%j|%Z"]

    class Runner:
        def run(self, argv, **kw):
            return CommandResult(argv, 0, fixture("squeue_list.txt"), "")

    jobs = sched.queued(Runner(), "sciops-probe-r2-")
    assert [(j.job_id, j.name, j.workdir) for j in jobs] == [("6", "sciops-probe-r2-deadbeef-a1", "/var/tmp")]
    assert sched.queued(Runner(), "sciops-none-") == []
