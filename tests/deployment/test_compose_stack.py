"""fiji_project deployed as docker-compose.yaml deploys it, driven the way a lab drives it.

The api-server, scheduler (LocalExecutor), dag-processor and triggerer run as separate
processes with the compose file's settings (``stack.Stack``) on the testbed's PostgreSQL,
after ``docker/init.sh`` (compose's airflow-init). Each run is triggered over the REST API
with a JWT from ``/auth/token`` and must succeed with every task on its first try: Airflow
3.3's stale-executor-event race after a deferral (see ``sciops.triggers``) must not cost a
retry, with the worker window on (fast arrays never defer) and off (every array defers and
its trigger fires as early as SciOps lets it). Restarts a facility makes for upgrades are
made here too, with the time they cost bounded loosely: the scheduler killed mid-array, the
api-server restarted while arrays are deferred and a ``sciops run --wait`` follows one of them.
"""
from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers import REPO, REPORT
from deployment.stack import Stack

pytestmark = pytest.mark.imagej
DEMO_COUNTS = {f"synthetic/nuclei_{n:02d}.tif": n for n in (8, 15, 23, 31, 42, 57)}  # as scripts/demo.sh


def _testbed(*args: str) -> str:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "testbed" / args[0]), *args[1:]], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(gridengine, postgres_ledger, tmp_path_factory):
    from sciops.imaging.synthetic import make_images

    # a storage root the cluster's job user can write too (group sciops, setgid), as for the SGE tests
    root = Path("/srv/sciops-testbed") / f"deploy-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    os.chown(root, 0, grp.getgrnam("sciops").gr_gid)
    os.chmod(root, 0o2775)
    old_umask = os.umask(0o002)
    shutil.copytree(REPO / "examples" / "demo", root / "demo")          # what the README says to do
    make_images(root / "demo" / "input", DEMO_COUNTS)
    make_images(root / "cells" / "input", {"a.tif": 4, "b.tif": 9, "c.tif": 13, "d.tif": 21}, size=160)
    database = _testbed("postgres.sh", "fresh-db", f"sciops_airflow_deploy_{os.getpid()}")   # never another's
    home = tmp_path_factory.mktemp("deployment")
    s = Stack(home, database, postgres_ledger, storage_root=root,
              extra_env={"AIRFLOW_CONN_SCIOPS_CLUSTER": os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"],
                         "SGE_ROOT": os.environ.get("SGE_ROOT", "/var/lib/gridengine")})
    s.init()
    s.start()
    s.login()
    yield s
    s.stop()
    _testbed("postgres.sh", "drop-db", f"sciops_airflow_deploy_{os.getpid()}")
    os.umask(old_umask)
    shutil.rmtree(root, ignore_errors=True)


def run_ok(stack: Stack, run_id: str, timeout: float = 600) -> None:
    state = stack.wait_run("fiji_project", run_id, timeout)
    tis = stack.task_instances("fiji_project", run_id)
    retried = {ti["task_id"]: ti["try_number"] for ti in tis if (ti["try_number"] or 0) > 1}
    assert state == "success" and not retried, (state, retried, stack.diagnostics(run_id))


def task(stack: Stack, run_id: str, task_id: str) -> dict:
    return next(ti for ti in stack.task_instances("fiji_project", run_id) if ti["task_id"] == task_id)


def wait_task(stack: Stack, run_id: str, task_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.time() + timeout
    while True:
        ti = task(stack, run_id, task_id)
        if ti["state"] in states:
            return ti
        assert time.time() < deadline, (task_id, ti["state"], stack.diagnostics(run_id))
        time.sleep(0.5)


def sciops_cli(stack: Stack, tmp_path: Path):
    """The installed ``sciops`` command against the deployment: ``(run it, start it in the background)``."""
    import sys

    sciops = Path(sys.executable).with_name("sciops")
    assert sciops.exists(), "scripts/setup.sh installs the sciops command into .venv/bin"
    env = {**os.environ, "SCIOPS_API_URL": stack.base, "SCIOPS_USER": "airflow", "SCIOPS_PASSWORD": stack.password(),
           "SCIOPS_STORAGE_ROOT": str(stack.storage_root), "SCIOPS_CONFIG": str(tmp_path / "no-config.toml")}
    env.pop("PYTHONPATH", None)   # the installed command needs no PYTHONPATH

    def cli(*args, **extra):
        return subprocess.run([str(sciops), *args], env={**env, **extra}, capture_output=True, text=True, timeout=900)

    def background(*args) -> tuple[subprocess.Popen, Path]:
        out = tmp_path / f"sciops-{uuid.uuid4().hex[:6]}.out"
        return subprocess.Popen([str(sciops), *args], env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT), out

    return cli, background


def wait_for_line(out: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> "re.Match":
    import re

    deadline = time.time() + timeout
    while not (found := re.search(pattern, out.read_text())):
        assert proc.poll() is None and time.time() < deadline, (pattern, out.read_text())
        time.sleep(0.5)
    return found


def test_init_shares_one_config_and_touches_only_what_it_must(stack):
    cfg = (stack.home / "config" / "airflow.cfg").read_text()
    assert "jwt_secret = " in cfg   # one secret, in the file every service reads
    assert oct(os.stat(stack.home / "config" / "passwords.json").st_mode)[-3:] == "600"
    again = stack.init()            # a second start changes nothing and chowns nothing of the projects
    assert "created the projects folder" not in again and "passwords generated" not in again
    assert (stack.home / "config" / "airflow.cfg").read_text() == cfg


def test_the_dag_starts_paused_and_runs_once_unpaused(stack, tmp_path):
    """``sciops run --wait`` on the paused DAG says so (the run waits queued), and goes on once it is unpaused."""
    dag = stack.wait_for_dag("fiji_project")
    assert dag["is_paused"] is True          # AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION, as the README warns
    _, background = sciops_cli(stack, tmp_path)
    proc, out = background("run", "demo", "--wait")
    run_id = wait_for_line(out, r"started (\S+)", proc).group(1)
    wait_for_line(out, r"paused: unpause fiji_project", proc)
    t0 = time.time()
    stack.unpause("fiji_project")
    assert proc.wait(600) == 0, out.read_text()
    REPORT["deployment: demo run over REST, end to end"] = f"{time.time() - t0:.1f} s"
    assert "fiji_project unpaused: the run goes on" in out.read_text()
    run_ok(stack, run_id)
    out = stack.storage_root / "demo" / "output"
    run = json.loads(next(out.glob("*/run.json")).read_text())
    assert run["status"] == "success" and run["images"]["ok"] == run["images"]["total"] == 8
    assert run["trigger"] in ("UI/API", "manual")
    # the ledger is the compose file's PostgreSQL, and the dashboard reads it through the api-server
    status, runs = stack.request("GET", "/sciops/api/runs?project=demo")
    assert status == 200 and run["run_id"] in [r["run_id"] for r in runs["runs"]]


def test_concurrent_runs_never_need_a_retry(stack):
    stack.wait_for_dag("fiji_project")
    stack.unpause("fiji_project")
    runs = [stack.trigger("fiji_project", {"project": "demo"}) for _ in range(3)]
    for run_id in runs:
        run_ok(stack, run_id)


def test_a_scheduler_killed_mid_array_costs_about_a_minute_and_one_reset_try(stack):
    """``kill -9`` of the scheduler, with the task processes it ran (a container killed), while ``run_array``
    watches its array from the worker; compose starts it again at once. The new scheduler resets the orphaned
    task once the old one's heartbeat is 60 s old, at its next orphan check (compose: every 15 s), and the new try
    re-attaches to the array: no failure handling, no retry delay, the run whole. With Airflow's defaults (a check
    every 300 s) this took over five minutes (issue 37)."""
    stack.unpause("fiji_project")
    run_id = stack.trigger("fiji_project", {"project": "demo", "smoke_test": False, "images_per_task": 1})
    wait_task(stack, run_id, "run_array", {"running"}, 300)
    time.sleep(1)
    t0 = time.time()
    stack.kill("scheduler")
    ti = wait_task(stack, run_id, "run_array", {"success", "failed", "up_for_retry"}, 600)
    cost = time.time() - t0
    REPORT["restart: scheduler killed mid-array, to run_array's end"] = f"{cost:.0f} s"
    assert ti["state"] == "success" and ti["try_number"] == 2, (ti, stack.diagnostics(run_id))
    # the new scheduler reset the orphan (Airflow's history calls the abandoned try failed): not a failure handled
    # by a retry after retry_delay, nor a heartbeat timeout
    said = (stack.home / "service-logs" / "scheduler.log").read_text(errors="replace")
    assert "orphaned TaskInstances" in said and "Task did not emit heartbeat" not in said, stack.diagnostics(run_id)
    assert cost < 150, f"the killed scheduler cost {cost:.0f} s (compose's orphan check: every 15 s)"
    assert stack.wait_run("fiji_project", run_id) == "success", stack.diagnostics(run_id)
    others = {t["task_id"]: t["try_number"] for t in stack.task_instances("fiji_project", run_id)
              if t["task_id"] != "run_array" and (t["try_number"] or 0) > 1}
    assert not others, others
    run = json.loads(next(p for p in (stack.storage_root / "demo" / "output").glob("*/run.json")
                          if json.loads(p.read_text())["airflow_run_id"] == run_id).read_text())
    assert run["images"]["ok"] == 8 and run["array"]["attempts"] == 1   # re-attached: never submitted twice
    stack.wait_healthy()


def test_every_array_deferred_still_never_needs_a_retry_nor_across_an_api_server_restart(stack, tmp_path):
    """The worker window off: each array defers at once and its trigger fires as early as allowed. While the
    arrays are deferred the api-server is restarted: the tasks that resume meanwhile wait for it (compose's
    execution API retries) instead of failing, and ``sciops run --wait`` rides it out; then ``sciops sync down``
    fetches the run the command printed."""
    cli, background = sciops_cli(stack, tmp_path)
    stack.restart("scheduler", SCIOPS_WORKER_WAIT_SECONDS="0")
    stack.wait_for_dag("fiji_project")
    stack.unpause("fiji_project")
    runs = [stack.trigger("fiji_project", {"project": "demo", "smoke_test": False}) for _ in range(2)]
    proc, out = background("run", "demo", "-p", "smoke_test=false", "--wait")
    runs.append(wait_for_line(out, r"started (\S+)", proc).group(1))
    for run_id in runs:
        wait_task(stack, run_id, "run_array", {"deferred", "success"}, 300)
    t0 = time.time()
    stack.restart("api-server")
    down = time.time() - t0
    stack.login()
    for run_id in runs:
        run_ok(stack, run_id)
    REPORT["restart: api-server mid-deferral"] = (f"down {down:.0f} s, the three runs ended {time.time() - t0:.0f} s "
                                                  "after it went down, every task on its first try")
    assert time.time() - t0 < 480   # loose: the api-server alone took 3 min to start again on the loaded testbed
    assert proc.wait(300) == 0, out.read_text()
    said = out.read_text()
    # it said it lost Airflow and that the run goes on, and when it was back
    assert "cannot reach Airflow" in said and "trying again" in said and "the run goes on" in said, said
    assert "Airflow is back after" in said, said
    lan = tmp_path / "lan"
    got = cli("sync", "down", "demo", runs[-1], str(lan))
    assert got.returncode == 0, got.stdout + got.stderr
    [folder] = (lan / "output").iterdir()
    assert (folder / "summary.csv").read_text().count(".tif") == 8
    fired = [run_id for run_id in runs
             if any("Trigger fired event" in log.read_text(errors="replace")
                    for log in (stack.home / "logs").rglob("*.log") if "run_array" in str(log)
                    and run_id.replace(":", "") in str(log).replace(":", ""))]
    assert fired == runs, "not every array deferred"


def _sge_runs_at_once(stack, n: int) -> tuple[list[str], dict, list[str]]:
    """``n`` Grid Engine runs of the cells project triggered together; the head node's traffic while they ran."""
    from deployment.load import HeadNodeTraffic, blocked_lines, groups, log_size, service_log

    conf = {"project": "cells", "backend": "existing", "scheduler": "sge", "ssh_conn_id": "sciops_cluster",
            "memory": "1G", "images_per_task": 2, "smoke_test": False}
    offset = log_size(service_log(stack, "triggerer"))
    with HeadNodeTraffic(groups(stack)) as traffic:
        runs = [stack.trigger("fiji_project", conf) for _ in range(n)]
        for run_id in runs:
            run_ok(stack, run_id, timeout=900)
    return runs, traffic.summary(), blocked_lines(service_log(stack, "triggerer"), offset)


def test_grid_engine_over_ssh_and_runs_at_once_share_one_connection_and_one_status_query_per_poll(stack):
    """One Grid Engine run over SSH alone, then issue 17's load test, small (bench/bench_load.py runs twenty): every array watched by the one
    triggerer, on one Grid Engine head node. The triggerer holds one SSH connection to it whatever the
    number of runs, and sends about one status command per poll for all of them; each run is right."""
    stack.restart("scheduler", SCIOPS_WORKER_WAIT_SECONDS="0", SCIOPS_POLL_SECONDS="2")
    stack.unpause("fiji_project")
    [first], alone, _ = _sge_runs_at_once(stack, 1)
    # one run alone first: Grid Engine over SSH, as a lab's own cluster
    run = next(json.loads(p.read_text()) for p in (stack.storage_root / "cells" / "output").glob("*/run.json")
               if json.loads(p.read_text())["airflow_run_id"] == first)
    assert run["params"]["backend"] == "existing" and run["images"]["ok"] == 4
    assert run["array"]["job_ids"][0].isdigit()
    n = 5
    runs, many, blocked = _sge_runs_at_once(stack, n)
    REPORT["load: 1 run, triggerer"] = (f"{alone['connections'].get('triggerer', 0)} connection(s), "
                                       f"{alone['commands'].get('triggerer', 0)} commands in {alone['seconds']} s")
    REPORT[f"load: {n} runs at once, triggerer"] = (
        f"{many['connections'].get('triggerer', 0)} connection(s) (peak open {many['peak_open_connections'].get('triggerer', 0)}), "
        f"{many['commands'].get('triggerer', 0)} commands in {many['seconds']} s; event loop blocked {len(blocked)} time(s)")
    for run_id in runs:
        out = stack.storage_root / "cells" / "output"
        doc = next(json.loads(p.read_text()) for p in out.glob("*/run.json")
                   if json.loads(p.read_text())["airflow_run_id"] == run_id)
        assert doc["images"]["ok"] == 4 and doc["status"] == "success"
    # one connection per head node for the triggerer, not one per trigger (sshd's MaxStartups is 10 by default)
    # (it is closed when the last trigger on it ends, so runs that start later may open it again)
    assert many["peak_open_connections"].get("triggerer", 0) == 1, many
    # the status listing is shared: about one per 2 s poll for all runs, plus each job's accounting at its end
    assert many["commands"].get("triggerer", 0) <= many["seconds"] / 2 * 1.5 + 3 * n, many


def test_the_nightly_schedule_runs_each_opted_in_project_over_its_new_images(stack):
    """fiji_nightly unpaused: the scheduler makes its run at the next time of its schedule (every minute
    here, as SCIOPS_NIGHTLY_SCHEDULE in the compose environment would set it), which starts one fiji_project
    run per opted-in project with something new, over those images only, and waits for them."""
    from urllib.parse import quote

    from sciops.imaging.synthetic import make_images

    root = stack.storage_root
    for name, counts in (("n_fresh", {"a.tif": 4, "b.tif": 9}), ("n_done", {"a.tif": 4}),
                         ("n_third", {"a.tif": 4, "b.tif": 9}), ("n_broken", {"a.tif": 4})):
        make_images(root / name / "input", counts, size=128)
        (root / name / "project.yaml").write_text("nightly: true\nsmoke_test: false\nmemory: 1G\n"
                                                  + ("images_per_task: many\n" if name == "n_broken" else ""))
    stack.unpause("fiji_project")
    daytime = [stack.trigger("fiji_project", {"project": name}) for name in ("n_done", "n_third")]
    for run_id in daytime:                     # processed before, as a lab's daytime runs would (at once)
        run_ok(stack, run_id)
    make_images(root / "n_third" / "input", {"c.tif": 13}, size=128)   # a third of its images came since

    def runs(dag_id):
        status, data = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
        assert status == 200, data
        return {r["dag_run_id"]: r for r in data["dag_runs"]}

    before = set(runs("fiji_project"))
    stack.restart("dag-processor", SCIOPS_NIGHTLY_SCHEDULE="* * * * *")
    deadline = time.time() + 120
    while stack.wait_for_dag("fiji_nightly").get("timetable_summary") != "* * * * *":
        assert time.time() < deadline, stack.wait_for_dag("fiji_nightly")
        time.sleep(2)
    stack.unpause("fiji_nightly")
    deadline = time.time() + 180
    while not runs("fiji_nightly"):   # the next minute
        assert time.time() < deadline, stack.diagnostics(dag_id="fiji_nightly")
        time.sleep(2)
    nightly_run = next(iter(runs("fiji_nightly")))
    assert runs("fiji_nightly")[nightly_run]["run_type"] == "scheduled"
    assert stack.wait_run("fiji_nightly", nightly_run, timeout=900) == "success", \
        stack.diagnostics(nightly_run, "fiji_nightly")
    stack.request("PATCH", "/api/v2/dags/fiji_nightly", {"is_paused": True})
    started = {run_id: r for run_id, r in runs("fiji_project").items() if run_id not in before}
    assert sorted(r["conf"]["project"] for r in started.values()) == ["n_fresh", "n_third"]
    assert all(r["conf"]["only_new"] is True and run_id.startswith("nightly__") for run_id, r in started.items())
    for run_id in started:       # done already (the nightly run waited for them), each at its first try
        run_ok(stack, run_id)
    third = next(p for p in (root / "n_third" / "output").glob("nightly__*/run.json"))
    run = json.loads(third.read_text())
    assert run["trigger"] == "nightly" and run["images"]["total"] == 1
    assert (third.parent / "summary.csv").read_text().count("c.tif") == 1
    status, log = stack.request("GET", f"/api/v2/dags/fiji_nightly/dagRuns/{quote(nightly_run)}/taskInstances/"
                                       "scan/logs/1?full_content=true")
    assert "n_broken: invalid" in json.dumps(log), log


def test_the_sciops_command_from_init_to_logs(stack, tmp_path):
    """What a scientist types, against the deployed Airflow (api-server, scheduler, triggerer)."""
    import re

    from sciops.imaging.synthetic import make_images

    cli, _ = sciops_cli(stack, tmp_path)

    lan = tmp_path / "lab" / "cli_cells"
    made = cli("init", str(lan))
    assert made.returncode == 0 and (lan / "src" / "my_macro.ijm").exists(), made.stderr
    (lan / "project.yaml").write_text((lan / "project.yaml").read_text().replace("memory: 2G", "memory: 1G")
                                      + "smoke_test: false\n")
    make_images(lan / "input", {"a.tif": 4, "b.tif": 9, "c.tif": 13}, size=128)
    up = cli("sync", "up", str(lan))
    assert up.returncode == 0 and ": 5 transferred" in up.stdout, up.stdout + up.stderr  # 3 images, yaml, macro
    stack.unpause("fiji_project")
    ran = cli("run", "cli_cells", "-p", "images_per_task=1", "--wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_id = re.search(r"started (\S+)", ran.stdout).group(1)
    assert "3/3 images" in ran.stdout, ran.stdout
    shown = cli("status", "cli_cells")
    assert shown.returncode == 0 and run_id in shown.stdout and "success" in shown.stdout and "3/0/3" in shown.stdout
    got = cli("results", "cli_cells", "--to", str(lan))             # the newest run, by default
    assert got.returncode == 0, got.stderr
    fetched = Path(re.search(r"results: (.+)", got.stdout).group(1))
    assert fetched.parent == lan / "output" and (fetched / "summary.csv").read_text().count(".tif") == 3
    failed = cli("logs", "cli_cells", run_id)
    assert failed.returncode == 0 and "no image failed" in failed.stdout, failed.stdout + failed.stderr

    for args, extra, code, words in (
            (("status",), {"SCIOPS_PASSWORD": "not-the-password"}, 3, "refused the login"),
            (("status",), {"SCIOPS_API_URL": "http://127.0.0.1:9"}, 3, "cannot reach Airflow"),
            (("run", "no_such_project"), {}, 2, "no project 'no_such_project'"),
            (("run", "cli_cells", "-p", "oops"), {}, 2, "write it as key=value")):
        bad = cli(*args, **extra)
        assert bad.returncode == code and words in bad.stderr, (args, bad.returncode, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert "not-the-password" not in bad.stdout + bad.stderr
    assert "init" in cli("--help").stdout and "--wait" in cli("run", "--help").stdout
