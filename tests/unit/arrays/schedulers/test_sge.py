"""The sge scheduler's argv and parsers, on output captured from this machine's Grid Engine 8.1.9."""
from __future__ import annotations

from pathlib import Path

import pytest

from sciops.errors import SchedulerQueryError, SubmitError
from sciops.arrays.ssh import CommandResult
from sciops.arrays.schedulers.base import ArraySpec, JobState
from sciops.arrays.schedulers.sge import SGEScheduler, parse_task_ranges

FIX = Path(__file__).resolve().parents[3] / "fixtures" / "sge"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def test_submit_argv_with_resources_and_task_map():
    sched = SGEScheduler(queue="all.q", project="imaging", memory_resource="h_vmem", one_per_host=True)
    spec = ArraySpec(name="sciops-run1", command=["python3", "/w/job/sciops_task.py", "--manifest", "/w/m w.json"],
                     task_ids=[2, 5, 9], log_dir="/w/logs", workdir="/w", memory_mb=1024, cpus=2,
                     time_limit_s=3600, env={"SCIOPS_ATTEMPT": "2"})
    argv = sched.submit_argv(spec)
    assert argv[:7] == ["qsub", "-terse", "-notify", "-N", "sciops-run1", "-t", "1-3"]
    assert ["-v", "SCIOPS_ATTEMPT=2"] == argv[argv.index("-v"):argv.index("-v") + 2]
    assert "SCIOPS_TASK_MAP=2:5:9" in argv
    assert "SCIOPS_CHAIN=2:5:9" in argv    # chaining (sciops_node.claims): the chunks a runner may go on with
    assert ["-pe", "smp", "2"] == argv[argv.index("-pe"):argv.index("-pe") + 3]
    assert "h_vmem=1792M" in argv          # (1024 + 2560) / 2 slots
    assert "h_rt=3600" in argv and "fiji=1" in argv and "exclusive=true" not in argv
    assert argv[argv.index("-q") + 1] == "all.q" and argv[argv.index("-P") + 1] == "imaging"
    assert argv[-8:] == ["-b", "y", "-shell", "no", "python3", "/w/job/sciops_task.py", "--manifest", "/w/m w.json"]


def test_first_submission_has_no_task_map():
    spec = ArraySpec(name="n", command=["true"], task_ids=[1, 2, 3], log_dir="/l", workdir="/w")
    assert not any(a.startswith("SCIOPS_TASK_MAP") for a in SGEScheduler().submit_argv(spec))


def test_parse_submit():
    sched = SGEScheduler()
    assert sched.parse_submit(fixture("qsub_array.txt")) == "5"     # "5.1-4:1"
    assert sched.parse_submit(fixture("qsub_single.txt")) == "7"
    with pytest.raises(SubmitError):
        sched.parse_submit("Unable to run job: denied")


@pytest.mark.parametrize("text,tasks", [("3,4", [3, 4]), ("1-4:1", [1, 2, 3, 4]), ("5-9:2,12", [5, 7, 9, 12]),
                                        ("7", [7])])
def test_task_ranges(text, tasks):
    assert parse_task_ranges(text) == tasks


def test_parse_status_running_and_collapsed_pending():
    states = SGEScheduler().parse_status(fixture("qstat_running_pending.xml"), [1, 2, 3, 4], "5")
    assert states == {1: JobState.RUNNING, 2: JobState.RUNNING, 3: JobState.PENDING, 4: JobState.PENDING}


def test_parse_status_maps_index_to_chunk_and_ignores_other_jobs():
    # job 5 as a resubmission of chunks 10, 20, 30, 40
    states = SGEScheduler().parse_status(fixture("qstat_running_pending.xml"), [10, 20, 30, 40], "5")
    assert states == {10: JobState.RUNNING, 20: JobState.RUNNING, 30: JobState.PENDING, 40: JobState.PENDING}
    assert set(SGEScheduler().parse_status(fixture("qstat_running_pending.xml"), [1, 2], "6").values()) == {
        JobState.UNKNOWN}


def test_finished_or_empty_queue_is_unknown_never_done():
    states = SGEScheduler().parse_status(fixture("qstat_empty.xml"), [1, 2], "5")
    assert states == {1: JobState.UNKNOWN, 2: JobState.UNKNOWN}


def test_eqw_is_an_error_state():
    assert SGEScheduler().parse_status(fixture("qstat_eqw.xml"), [1], "11") == {1: JobState.ERROR}


def test_unreadable_qstat_raises_query_error():
    with pytest.raises(SchedulerQueryError):
        SGEScheduler().parse_status("<job_info", [1], "1")


def test_accounting_exit_codes_limits_and_qdel():
    sched = SGEScheduler()
    ok = sched.parse_accounting(fixture("qacct_ok.txt"), [1, 2, 3, 4])
    assert {t: a.state for t, a in ok.items()} == {t: JobState.DONE for t in (1, 2, 3, 4)}
    assert ok[1].seconds == 8 and ok[1].max_rss_mb == pytest.approx(3.395)
    mixed = sched.parse_accounting(fixture("qacct_exit1_hrt.txt"), [1, 2])
    assert mixed[1].state == JobState.FAILED and mixed[1].exit_code == 1 and mixed[1].reason == "exit code 1"
    assert mixed[2].state == JobState.FAILED and "h_rt" in mixed[2].reason and "failed 37" in mixed[2].reason
    # qdel without -notify and kill -9 of the task look alike (failed 100, exit 137): a kill, resubmitted
    killed = sched.parse_accounting(fixture("qacct_qdel.txt"), [1])
    assert killed[1].state == JobState.FAILED and "failed 100" in killed[1].reason
    # under -notify the runner stops on SIGUSR2 with exit 140: a deletion, whatever failed says
    qdel = sched.parse_accounting(fixture("qacct_qdel_notify.txt"), [1, 2])
    assert {a.state for a in qdel.values()} == {JobState.CANCELLED} and "qdel" in qdel[1].reason
    # execd killed with its tasks, then started again (a node that rebooted): failed 19, a lost node
    lost = sched.parse_accounting(fixture("qacct_node_lost.txt"), [1, 2])
    assert {a.state for a in lost.values()} == {JobState.LOST} and "failed 19" in lost[1].reason


def test_no_record_yet_is_not_an_error():
    class Runner:
        def run(self, argv, check=True, timeout=None):
            return CommandResult(argv, 1, "", fixture("qacct_missing.txt").splitlines()[0])

    assert SGEScheduler().accounting(Runner(), "99999", [1]) == {}


def test_cancel_argv():
    assert SGEScheduler().cancel_argv("42") == ["qdel", "42"]


def test_the_jobs_of_a_run_are_listed_by_name_prefix_with_their_folders():
    """``qstat -xml -j 'prefix*'`` (captured): each job once, with the folder it works in; none is exit 0 too."""
    sched = SGEScheduler()
    assert sched.queue_list_argv("sciops-probe-r1-") == ["qstat", "-xml", "-j", "sciops-probe-r1-*"]
    jobs = sched.parse_queue_list(fixture("qstat_j_prefix.xml"), "sciops-probe-r1-")
    assert [(j.job_id, j.name, j.workdir) for j in jobs] == [("6", "sciops-probe-r1-deadbeef-a1", "/tmp"),
                                                             ("7", "sciops-probe-r1-cafebabe-a2", "/var/tmp")]
    assert sched.parse_queue_list(fixture("qstat_j_none.xml"), "sciops-nomatch-") == []
    with pytest.raises(SchedulerQueryError):
        sched.parse_queue_list("<job_info/>", "x")


def test_a_prefix_with_a_pattern_character_is_not_asked_for():
    class Runner:
        def run(self, argv, **kw):
            raise AssertionError(f"ran {argv}")

    assert SGEScheduler().queue_list_argv("sciops-a*b-") is None
    with pytest.raises(SchedulerQueryError, match="cannot list"):
        SGEScheduler().queued(Runner(), "sciops-a*b-")
