"""A submit whose answer is lost is never sent twice: the job is found by its unique name.

Real Grid Engine and Slurm over real SSH. The one seam: :class:`LostAnswer` lets the head
node run the submit command, then loses its answer, as a dropped link or a timeout does
(``SSHRunner`` raises ``OutcomeUnknown`` then: see test_gridengine's timed-out command test).
"""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from helpers import wait_ended

from sciops.errors import OutcomeUnknown, SubmitError
from sciops.arrays.ssh import SSHRunner
from sciops.arrays.schedulers.base import ArraySpec
from sciops.arrays.schedulers.sge import SGEScheduler
from sciops.arrays.schedulers.slurm import SlurmScheduler


class LostAnswer:
    """Runs commands through ``runner``; the first ``argv[0] == lose`` runs (``run_it``) but its answer is lost."""

    def __init__(self, runner, lose: str, run_it: bool = True):
        self.runner, self.lose, self.run_it, self.lost = runner, lose, run_it, 0

    def run(self, argv, *, check=True, timeout=None):
        if argv[0] == self.lose and not self.lost:
            self.lost += 1
            if self.run_it:
                self.runner.run(argv, check=False, timeout=timeout)
            raise OutcomeUnknown(list(argv), 255, "", "the link dropped before the answer came")
        return self.runner.run(argv, check=check, timeout=timeout)


def jobs_named(name: str) -> set[str]:
    """Job ids carrying ``name`` in Grid Engine and Slurm, asked independently of the code under test."""
    sge = subprocess.run(["su", "-", "sciops", "-c", "qstat -r -u '*'"], capture_output=True, text=True).stdout
    ids, last = set(), None
    for line in sge.splitlines():
        if line.split() and line.split()[0].isdigit():   # a job line; "Full jobname:" lines follow it
            last = line.split()[0]
        elif "Full jobname:" in line and line.split("Full jobname:")[1].strip() == name:
            ids.add(last)
    slurm = subprocess.run(["squeue", "-h", "-o", "%F|%j"], capture_output=True, text=True).stdout
    return ids | {jid for jid, _, n in (x.partition("|") for x in slurm.splitlines()) if n == name}


def spec(job_dir: str, name: str, seconds: int = 4) -> ArraySpec:
    return ArraySpec(name=name, command=["sleep", str(seconds)], task_ids=[1, 2], log_dir=f"{job_dir}/logs",
                     workdir=job_dir)


@pytest.fixture(params=["sge", "slurm"])
def sched_ssh(request, slurm):
    """Each scheduler (looking again after a lost answer within a second) and an SSH runner to the head node."""
    sched = SGEScheduler() if request.param == "sge" else SlurmScheduler()
    sched.find_pause_s = 0.5
    ssh = SSHRunner(slurm)
    yield sched, ssh
    ssh.close()


def test_a_lost_submit_answer_finds_the_job_by_name(sched_ssh, job_dir):
    sched, ssh = sched_ssh
    name = f"sciops-lost-{uuid.uuid4().hex[:8]}-a1"
    runner = LostAnswer(ssh, sched.submit_argv(spec(job_dir, name))[0])
    job_id = sched.submit(runner, spec(job_dir, name))
    assert runner.lost == 1
    assert jobs_named(name) == {job_id}          # submitted exactly once, and that is the id we hold
    assert sched.find(ssh, name, accounting=False) == job_id
    wait_ended(sched, ssh, job_id, [1, 2])
    deadline = time.time() + 30                  # accounting lags the queue
    while sched.find(ssh, name) is None and time.time() < deadline:
        time.sleep(1)
    assert sched.find(ssh, name) == job_id       # an ended job is found in accounting


def test_a_lost_submit_that_never_ran_is_not_resent_and_a_retry_submits_once(sched_ssh, job_dir):
    sched, ssh = sched_ssh
    name = f"sciops-never-{uuid.uuid4().hex[:8]}-a1"
    runner = LostAnswer(ssh, sched.submit_argv(spec(job_dir, name))[0], run_it=False)
    with pytest.raises(SubmitError) as err:
        sched.submit(runner, spec(job_dir, name))
    assert "not submitted again" in str(err.value) and name in str(err.value)
    assert jobs_named(name) == set()
    # the task's retry looks first, finds nothing, submits once; a second retry finds that job
    job_id = sched.submit(ssh, spec(job_dir, name, seconds=30), look_first=True)
    assert sched.submit(ssh, spec(job_dir, name, seconds=30), look_first=True) == job_id
    assert jobs_named(name) == {job_id}
    sched.cancel(ssh, job_id)
