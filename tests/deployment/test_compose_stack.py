"""fiji_project deployed as docker-compose.yaml deploys it, driven the way a lab drives it.

The api-server, scheduler (LocalExecutor), dag-processor and triggerer run as separate
processes with the compose file's settings (``stack.Stack``) on the testbed's PostgreSQL,
after ``docker/init.sh`` (compose's airflow-init). Each run is triggered over the REST API
with a JWT from ``/auth/token`` and must succeed with every task on its first try: Airflow
3.3's stale-executor-event race after a deferral (see ``sciops.triggers``) must not cost a
retry, with the worker window on (fast arrays never defer) and off (every array defers and
its trigger fires as early as SciOps lets it).
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
    from sciops.synthetic import make_images

    # a storage root the cluster's job user can write too (group sciops, setgid), as for the SGE tests
    root = Path("/srv/sciops-testbed") / f"deploy-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    os.chown(root, 0, grp.getgrnam("sciops").gr_gid)
    os.chmod(root, 0o2775)
    old_umask = os.umask(0o002)
    shutil.copytree(REPO / "examples" / "demo", root / "demo")          # what the README says to do
    make_images(root / "demo" / "input", DEMO_COUNTS)
    make_images(root / "cells" / "input", {"a.tif": 4, "b.tif": 9, "c.tif": 13, "d.tif": 21}, size=160)
    database = _testbed("postgres.sh", "fresh-db", "sciops_airflow_deploy")
    home = tmp_path_factory.mktemp("deployment")
    s = Stack(home, database, postgres_ledger, storage_root=root,
              extra_env={"AIRFLOW_CONN_SCIOPS_CLUSTER": os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"],
                         "SGE_ROOT": os.environ.get("SGE_ROOT", "/var/lib/gridengine")})
    s.init()
    s.start()
    s.login()
    yield s
    s.stop()
    os.umask(old_umask)
    shutil.rmtree(root, ignore_errors=True)


def run_ok(stack: Stack, run_id: str, timeout: float = 600) -> None:
    state = stack.wait_run("fiji_project", run_id, timeout)
    tis = stack.task_instances("fiji_project", run_id)
    retried = {ti["task_id"]: ti["try_number"] for ti in tis if (ti["try_number"] or 0) > 1}
    assert state == "success" and not retried, (state, retried, stack.diagnostics(run_id))


def test_init_shares_one_config_and_touches_only_what_it_must(stack):
    cfg = (stack.home / "config" / "airflow.cfg").read_text()
    assert "jwt_secret = " in cfg   # one secret, in the file every service reads
    assert oct(os.stat(stack.home / "config" / "passwords.json").st_mode)[-3:] == "600"
    again = stack.init()            # a second start changes nothing and chowns nothing of the projects
    assert "created the projects folder" not in again and "passwords generated" not in again
    assert (stack.home / "config" / "airflow.cfg").read_text() == cfg


def test_the_dag_starts_paused_and_runs_once_unpaused(stack):
    dag = stack.wait_for_dag("fiji_project")
    assert dag["is_paused"] is True          # AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION, as the README warns
    stack.unpause("fiji_project")
    t0 = time.time()
    run_id = stack.trigger("fiji_project", {"project": "demo"})
    run_ok(stack, run_id)
    REPORT["deployment: demo run over REST, end to end"] = f"{time.time() - t0:.1f} s"
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


def test_every_array_deferred_still_never_needs_a_retry(stack):
    """The worker window off: each array defers at once and its trigger fires as early as allowed."""
    stack.restart("scheduler", SCIOPS_WORKER_WAIT_SECONDS="0")
    stack.unpause("fiji_project")
    runs = [stack.trigger("fiji_project", {"project": "demo", "smoke_test": False}) for _ in range(3)]
    for run_id in runs:
        run_ok(stack, run_id)
    fired = [run_id for run_id in runs
             if any("Trigger fired event" in log.read_text(errors="replace")
                    for log in (stack.home / "logs").rglob("*.log") if "run_array" in str(log)
                    and run_id.replace(":", "") in str(log).replace(":", ""))]
    assert fired == runs, "not every array deferred"


def test_grid_engine_over_ssh(stack):
    stack.unpause("fiji_project")
    run_id = stack.trigger("fiji_project", {"project": "cells", "backend": "existing", "scheduler": "sge",
                                            "ssh_conn_id": "sciops_cluster", "memory": "1G", "images_per_task": 2})
    run_ok(stack, run_id, timeout=900)
    run = json.loads(next((stack.storage_root / "cells" / "output").glob("*/run.json")).read_text())
    assert run["params"]["backend"] == "existing" and run["images"]["ok"] == 4
    assert run["array"]["job_ids"][0].isdigit()
