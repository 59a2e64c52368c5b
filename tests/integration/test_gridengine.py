"""Grid Engine over real SSH: the sge scheduler, the SSH runners, the trigger, re-attach and sshd restarts."""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO, wait_ended
from sciops.arrays.ssh import SSHRunner
from sciops.arrays.schedulers.base import ArraySpec, JobState
from sciops.arrays.schedulers.sge import SGEScheduler
from sciops.triggers.array import ArrayJobTrigger


def qstat_jobs(name: str) -> list[str]:
    out = subprocess.run(["su", "-", "sciops", "-c", "qstat -u sciops"], capture_output=True, text=True).stdout
    return sorted({line.split()[0] for line in out.splitlines() if name[:10] in line})  # a line per task


def spec(tmp: str, name: str, command: list[str], tasks: list[int]) -> ArraySpec:
    return ArraySpec(name=name, command=command, task_ids=tasks, log_dir=f"{tmp}/logs", workdir=tmp)


def test_submit_status_accounting_over_ssh(gridengine, job_dir):
    runner, sched = SSHRunner(gridengine), SGEScheduler()
    # a resubmission of scattered chunks 2, 5, 9: array 1-3 with SCIOPS_TASK_MAP
    cmd = ["sh", "-c", 'test "$SGE_TASK_ID" != 2 || exit 3; echo "$SCIOPS_TASK_MAP" > "$PWD/map.txt"']
    job_id = sched.submit(runner, spec(job_dir, "sciops-t1", cmd, [2, 5, 9]))
    assert job_id.isdigit()
    states = sched.status(runner, job_id, [2, 5, 9])
    assert set(states.values()) <= {JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN}
    wait_ended(sched, runner, job_id, [2, 5, 9])
    deadline, acct = time.time() + 30, {}
    while len(acct) < 3 and time.time() < deadline:   # qacct lags qstat
        acct = sched.accounting(runner, job_id, [2, 5, 9])
        time.sleep(1)
    assert {t: a.state for t, a in acct.items()} == {2: JobState.DONE, 5: JobState.FAILED, 9: JobState.DONE}
    assert acct[5].exit_code == 3 and acct[5].reason == "exit code 3"
    assert open(f"{job_dir}/map.txt").read().strip() == "2:5:9"
    sched.cancel(runner, job_id)   # gone already: harmless
    runner.close()


def test_trigger_round_trip_serialization():
    trig = ArrayJobTrigger(job_id="12", task_ids=[1, 3], scheduler="sge", scheduler_options={"queue": "all.q"},
                           ssh_conn_id="sciops_cluster", poll_seconds=2, n_images=40, work_dir="/w",
                           started_at=1000.0)
    path, kwargs = trig.serialize()
    assert path == "sciops.triggers.array.ArrayJobTrigger"
    rebuilt = ArrayJobTrigger(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    import json

    json.dumps(kwargs)   # JSON-serializable arguments only


def run_trigger(trigger, timeout=120):
    async def go():
        events = []
        async for ev in trigger.run():
            events.append(ev.payload)
        return events

    return asyncio.run(asyncio.wait_for(go(), timeout))


def test_operator_reattaches_after_a_kill_and_trigger_survives_sshd_restart(gridengine, shared_storage):
    """The Airflow task dies after submitting; its retry re-attaches (one job in qstat, never two).
    Meanwhile sshd restarts under the polling trigger, which reconnects and ends with one event."""
    from airflow.sdk.exceptions import TaskDeferred

    from sciops.operators.run_array import STATE_KEY, FijiArrayOperator
    from sciops.run.project import write_json

    run_dir = shared_storage / "proj" / "output" / "r1"
    work = run_dir / "work"
    for d in (work / "job", work / "status", run_dir / "logs"):
        d.mkdir(parents=True)
    # a stand-in runner: each task sleeps, then reports its chunk's images ok
    (work / "job" / "sciops_task.py").write_text(
        "import json, os, sys, time\n"
        "m = json.load(open(sys.argv[sys.argv.index('--manifest') + 1]))\n"
        "t = int(os.environ['SGE_TASK_ID'])\n"
        "time.sleep(6)\n"
        "with open(m['work_dir'] + '/status/task-%04d.jsonl' % t, 'a') as fh:\n"
        "    [fh.write(json.dumps({'image': i, 'status': 'ok'}) + '\\n') for i in m['chunks'][t - 1]]\n")
    manifest = {"run_id": "r1-reattach", "run_dir": str(run_dir), "work_dir": str(work), "memory_mb": 1024,
                "chunks": [["a.tif"], ["b.tif"]], "max_attempts": 2, "backend": "existing",
                "backend_options": {"ssh_conn_id": gridengine, "scheduler": "sge", "python": "python3",
                                    "scheduler_options": {}}}
    path = write_json(work / "manifest.json", manifest)

    class Store(dict):   # the one seam: Airflow's task_state_store, kept across the "retry"
        def set(self, key, value):
            self[key] = value

    store = Store()
    context = {"task_state_store": store}
    op = FijiArrayOperator(task_id="run_array", manifest_path=str(path))
    with pytest.raises(TaskDeferred) as first:
        op.execute(context)
    job_id = store[STATE_KEY]["job_id"]
    # ... the worker is killed here; Airflow retries the task:
    retry = FijiArrayOperator(task_id="run_array", manifest_path=str(path))
    with pytest.raises(TaskDeferred) as second:
        retry.execute(context)
    assert second.value.trigger.job_id == first.value.trigger.job_id == job_id
    assert qstat_jobs("sciops-r1-reattach") == [job_id]      # one job, never two

    trigger = second.value.trigger

    def restart_sshd_soon():
        time.sleep(2)
        subprocess.run(["bash", str(REPO / "scripts" / "testbed" / "sshd.sh"), "restart"], check=True,
                       capture_output=True)

    import threading

    threading.Thread(target=restart_sshd_soon, daemon=True).start()
    events = run_trigger(trigger)
    assert len(events) == 1 and events[0]["status"] == "ended", events
    assert events[0]["reconnects"] >= 1          # the restart did cut the trigger's connection
    assert {a["state"] for a in events[0]["accounting"].values()} == {"done"}
    result = retry.execute_complete(context, events[0])
    assert result == {"attempts": 1, "failed_tasks": [], "tasks": 2, "job_ids": [job_id], "node_losses": 0}


@pytest.mark.parametrize("options,cpus", [
    ({"queue": "all.q", "one_per_host": True}, 1),
    ({"memory_resource": "h_vmem", "exclusive": True}, 2),
    ({"project": None, "parallel_env": "smp"}, 2),
])
def test_resource_requests_are_accepted_by_real_grid_engine(gridengine, job_dir, options, cpus):
    runner, sched = SSHRunner(gridengine), SGEScheduler(**options)
    job_id = sched.submit(runner, ArraySpec(name="sciops-res", command=["true"], task_ids=[1], log_dir=f"{job_dir}/logs",
                                            workdir=job_dir, cpus=cpus, memory_mb=512, time_limit_s=60))
    wait_ended(sched, runner, job_id, [1])
    deadline, acct = time.time() + 30, {}
    while not acct and time.time() < deadline:
        acct = sched.accounting(runner, job_id, [1])
        time.sleep(1)
    assert acct[1].state == JobState.DONE, acct
    runner.close()


@pytest.mark.parametrize("conf,field,words", [
    ({"ssh_conn_id": "sciops_no_such_connection"}, "ssh_conn_id", "cannot reach the head node"),
    ({"ssh_conn_id": "sciops_closed_port"}, "ssh_conn_id", "cannot reach the head node"),
    ({"cluster_storage_root": "/nowhere/projects"}, "cluster_storage_root", "does not see"),
    ({"cluster_python": "python9"}, "ssh_conn_id", "lacks python9"),
])
def test_existing_backend_bad_input_is_refused_before_anything_runs(gridengine, shared_storage, make_project,
                                                                     monkeypatch, conf, field, words):
    import json

    from sciops.errors import ConfigError
    from sciops.phases.checks import check
    from sciops.run.runinfo import backend_for

    closed = json.loads(os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"])
    closed["port"] = 1
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_CLOSED_PORT", json.dumps(closed))
    make_project("p")
    cfg, project, _, _ = check({"project": "p", "backend": "existing", **conf})
    with pytest.raises(ConfigError) as err:
        with backend_for(cfg) as backend:
            backend.check(project, "manual__p")
    assert err.value.fields == [field] and words in str(err.value), err.value
    assert not (project.root / "output").exists()


def test_a_timed_out_ssh_command_is_not_sent_again(gridengine, tmp_path):
    """A submit whose outcome is unknown must not be resent: qsub was once submitted twice this way."""
    import uuid

    from sciops.errors import CommandError

    marker = Path("/tmp") / f"sciops-resend-{uuid.uuid4().hex[:8]}"
    runner = SSHRunner(gridengine)
    try:
        with pytest.raises(CommandError) as err:
            runner.run(["sh", "-c", f"echo sent >> {marker}; sleep 4"], timeout=1)
        assert "not sent again" in str(err.value)
        time.sleep(5)
        assert marker.read_text().splitlines() == ["sent"]  # once
        assert runner.run(["echo", "ok"]).stdout.strip() == "ok"  # the runner reconnects for the next command
    finally:
        runner.close()
        marker.unlink(missing_ok=True)


def _sleeping_run(shared_storage, seconds: int, run_id: str):
    """A planned run on Grid Engine whose stand-in tasks sleep ``seconds``; its manifest path."""
    from sciops.run.project import write_json

    run_dir = shared_storage / "proj" / "output" / run_id
    work = run_dir / "work"
    for d in (work / "job", work / "status", run_dir / "logs"):
        d.mkdir(parents=True)
    (work / "job" / "sciops_task.py").write_text(f"import time\ntime.sleep({seconds})\n")
    manifest = {"run_id": run_id, "run_dir": str(run_dir), "work_dir": str(work), "memory_mb": 1024,
                "chunks": [["a.tif"], ["b.tif"]], "max_attempts": 2, "backend": "existing",
                "backend_options": {"ssh_conn_id": "sciops_cluster", "scheduler": "sge", "python": "python3",
                                    "scheduler_options": {}}}
    return write_json(work / "manifest.json", manifest)


class _Store(dict):   # Airflow's task_state_store: the one seam
    def set(self, key, value):
        self[key] = value


def _gone_from_queue(job_id: str, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True,
                             env={"SGE_ROOT": "/var/lib/gridengine", "PATH": "/usr/bin:/bin"}).stdout
        if not [line for line in out.splitlines() if line.split()[:1] == [job_id]]:
            return True
        time.sleep(1)
    return False


def test_on_kill_cancels_the_array_the_worker_watches(gridengine, shared_storage):
    """The task is killed (timeout, marked failed) while it watches from the worker: the job must not run on."""
    import threading

    from sciops.operators.run_array import STATE_KEY, FijiArrayOperator

    path = _sleeping_run(shared_storage, 120, "r-kill")
    store = _Store()
    op = FijiArrayOperator(task_id="run_array", manifest_path=str(path), deferrable=False, poll_seconds=1)
    ended = []

    def work():
        try:
            op.execute({"task_state_store": store})
        except Exception as exc:  # noqa: BLE001 - the killed watch ends however it ends
            ended.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.time() + 30
    while STATE_KEY not in store and time.time() < deadline:
        time.sleep(0.2)
    job_id = store[STATE_KEY]["job_id"]
    time.sleep(2)
    op.on_kill()                                    # what Airflow's task runner calls on SIGTERM
    assert _gone_from_queue(job_id), f"job {job_id} still queued after on_kill"


def test_the_array_timeout_cancels_the_job_and_fails_the_task(gridengine, shared_storage):
    from datetime import timedelta

    from airflow.sdk.exceptions import AirflowFailException

    from sciops.operators.run_array import DEADLINE_KEY, STATE_KEY, FijiArrayOperator

    path = _sleeping_run(shared_storage, 120, "r-timeout")
    store = _Store()
    op = FijiArrayOperator(task_id="run_array", manifest_path=str(path), deferrable=False, poll_seconds=1,
                           timeout=timedelta(seconds=8))
    with pytest.raises(AirflowFailException, match="still ran at the array's timeout"):
        op.execute({"task_state_store": store})
    assert store[DEADLINE_KEY] > 0              # kept for a retry: the limit counts from the first submission
    assert _gone_from_queue(store[STATE_KEY]["job_id"])


def test_no_task_state_store_refuses_to_submit(gridengine, shared_storage):
    from sciops.operators.run_array import FijiArrayOperator

    op = FijiArrayOperator(task_id="run_array", manifest_path=str(_sleeping_run(shared_storage, 1, "r-nostore")))
    with pytest.raises(RuntimeError, match="task_state_store"):
        op.execute({})


def test_twenty_watchers_share_one_connection_and_one_status_query(gridengine):
    """Twenty triggers' runners in one event loop (one triggerer): one SSH connection to the head node,
    and ``qstat -xml -u '*'`` sent about once per poll for all of them, counted by the testbed sshd."""
    from deployment.load import HeadNodeTraffic
    from sciops.arrays.ssh import SharedCommandRunner

    argv = SGEScheduler().status_argv("0")
    poll = 1.0

    async def watchers():
        runners = [SharedCommandRunner(gridengine) for _ in range(20)]

        async def watch(runner, start):
            await asyncio.sleep(start)   # out of step, as triggers deferred at different moments are
            for _ in range(5):
                res = await runner.run(argv, share_for=poll)
                assert res.returncode == 0 and "<job_info" in res.stdout
                await asyncio.sleep(poll)

        await asyncio.gather(*(watch(r, i * poll / 20) for i, r in enumerate(runners)))
        stats = runners[0].stats
        for r in runners:
            await r.close()
        return stats

    with HeadNodeTraffic({"test": os.getpgid(0)}) as traffic:
        stats = asyncio.run(watchers())
    seen = traffic.summary()
    assert seen["connections"].get("test") == 1 and seen["peak_open_connections"].get("test") == 1, seen
    # 100 asks over ~6 s: about one command per poll reaches the host, the rest share its answer
    assert seen["commands"].get("test", 0) == stats["commands"] <= seen["seconds"] / poll + 2, (seen, stats)
    assert stats["shared"] == 100 - stats["commands"]
