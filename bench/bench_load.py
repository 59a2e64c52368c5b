"""Twenty fiji_project runs at once on one Airflow, one triggerer and one Grid Engine head node over SSH.

Starts Airflow as docker-compose.yaml does (tests/deployment/stack.py; needs root for the testbed:
Grid Engine, sshd, PostgreSQL), every array deferred to the triggerer (SCIOPS_WORKER_WAIT_SECONDS=0),
and measures, from outside SciOps (tests/deployment/load.py: ``ss -tnp`` samples and the sshd log),
for one run alone and then ``--runs`` triggered together:

* SSH connections the triggerer opened to the head node, and the most it held open at once;
* commands it sent, per minute (one status listing per poll for all runs, or one per run?);
* the triggerer's "event loop blocked" warnings;
* wall time from the first REST trigger to the last run's end, and every run's result.

Writes bench/results/load.json. The baseline is the single run of the same invocation.

    python bench/bench_load.py --runs 20
"""
from __future__ import annotations

import argparse
import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "plugins")]

from deployment.load import HeadNodeTraffic, blocked_lines, groups, log_size, service_log  # noqa: E402
from deployment.stack import Stack  # noqa: E402

COUNTS = {"a.tif": 4, "b.tif": 9, "c.tif": 13, "d.tif": 21}


def testbed(*args: str) -> str:
    out = subprocess.run(["bash", str(REPO / "scripts" / "testbed" / args[0]), *args[1:]], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def wave(stack: Stack, root: Path, n: int) -> dict:
    conf = {"project": "cells", "backend": "existing", "scheduler": "sge", "ssh_conn_id": "sciops_cluster",
            "memory": "1G", "images_per_task": 2, "smoke_test": False}
    offset = log_size(service_log(stack, "triggerer"))
    t0 = time.time()
    with HeadNodeTraffic(groups(stack)) as traffic:
        runs = [stack.trigger("fiji_project", conf) for _ in range(n)]
        states = {run_id: stack.wait_run("fiji_project", run_id, timeout=3600) for run_id in runs}
    wall = time.time() - t0
    seen = traffic.summary()
    docs = [json.loads(p.read_text()) for p in (root / "cells" / "output").glob("*/run.json")]
    mine = [d for d in docs if d["airflow_run_id"] in states]
    retried = sum(1 for run_id in runs for ti in stack.task_instances("fiji_project", run_id)
                  if (ti["try_number"] or 0) > 1)
    return {
        "runs": n, "wall_s": round(wall, 1), "all_success": all(s == "success" for s in states.values()),
        "results_right": len(mine) == n and all(d["images"]["ok"] == len(COUNTS) for d in mine),
        "task_retries": retried,
        "triggerer": {"connections": seen["connections"].get("triggerer", 0),
                      "peak_open_connections": seen["peak_open_connections"].get("triggerer", 0),
                      "commands": seen["commands"].get("triggerer", 0),
                      "commands_per_minute": seen["commands_per_minute"].get("triggerer", 0.0)},
        "all_services": seen,
        "event_loop_blocked": len(blocked_lines(service_log(stack, "triggerer"), offset)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--poll", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true", help="keep the deployment's folder (service logs) and print it")
    args = ap.parse_args()
    from sciops.imaging.synthetic import make_images

    for script in ("gridengine.sh", "sshd.sh", "postgres.sh"):
        testbed(script, "start")
    conn = testbed("sshd.sh", "conn")
    home = Path(tempfile.mkdtemp(prefix="sciops-bench-load-"))
    root = Path("/srv/sciops-testbed") / f"bench-load-{os.getpid()}"   # writable by the cluster's job user
    root.mkdir(parents=True)
    os.chown(root, 0, grp.getgrnam("sciops").gr_gid)
    os.chmod(root, 0o2775)
    os.umask(0o002)
    make_images(root / "cells" / "input", COUNTS, size=160)
    stack = Stack(home / "airflow", testbed("postgres.sh", "fresh-db", "sciops_airflow_bench"),
                  testbed("postgres.sh", "conn"), storage_root=root,
                  extra_env={"AIRFLOW_CONN_SCIOPS_CLUSTER": conn, "SGE_ROOT": "/var/lib/gridengine",
                             "SCIOPS_WORKER_WAIT_SECONDS": "0", "SCIOPS_POLL_SECONDS": str(args.poll),
                             # twenty active at once, not Airflow's default 16 (the rest would queue)
                             "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": str(max(args.runs, 16))})
    stack.up()
    try:
        wave(stack, root, 1)            # warm-up: DAG parsed, JVM files cached
        alone = wave(stack, root, 1)
        print(json.dumps(alone))
        many = wave(stack, root, args.runs)
        print(json.dumps(many))
    finally:
        stack.stop()
    out = {"benchmark": "load", "machine": {"cpus": os.cpu_count()}, "poll_seconds": args.poll,
           "alone": alone, "together": many,
           "ratios": {"wall": round(many["wall_s"] / alone["wall_s"], 2),
                      "triggerer_commands_per_minute": round(
                          many["triggerer"]["commands_per_minute"] / max(alone["triggerer"]["commands_per_minute"],
                                                                         1e-9), 2),
                      "triggerer_connections": many["triggerer"]["connections"] / max(alone["triggerer"]["connections"],
                                                                                      1)}}
    dest = REPO / "bench" / "results" / "load.json"
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k not in ("alone", "together")}))
    if args.keep:
        print(f"kept: {home} (service-logs/triggerer.log)")
    else:
        shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
