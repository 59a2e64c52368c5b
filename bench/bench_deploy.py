"""REST-triggered demo runs on a warm deployment, end to end (issue 37: 20 s or less on 2 cores).

Starts Airflow as docker-compose.yaml does (tests/deployment/stack.py: api-server, scheduler,
dag-processor, triggerer as processes, the testbed's PostgreSQL; needs root for the testbed),
with ports and databases of its own (a metadata database and a ledger database named after this
process, free ports for the api-server, the log servers and the health check), so it runs beside
another stack (the deployment tests, another engineer's benchmark). It runs the demo once per DAG
shape to warm up (DAG parsed, JVM files cached), then ``--runs`` more of each, the shapes
alternating, each timed from the REST trigger to the run's ``success``; also the array phase
(run.json) and the ``record`` task (start to end, from Airflow).

The shapes: today's ``fiji_project`` and, as ``fiji_project_before``, the DAG file of ``--before``
(a git ref; default ``main``), so a change of shape is measured against what it replaces in the
same run, on the same loaded machine. Writes bench/results/deploy.json.

    python bench/bench_deploy.py --runs 5 [--before main]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "plugins")]

from deployment.stack import Stack  # noqa: E402

DEMO_COUNTS = {f"synthetic/nuclei_{n:02d}.tif": n for n in (8, 15, 23, 31, 42, 57)}
BEFORE = "fiji_project_before"


def testbed(*args: str) -> str:
    out = subprocess.run(["bash", str(REPO / "scripts" / "testbed" / args[0]), *args[1:]], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def dags_with_before(folder: Path, ref: str) -> bool:
    """This checkout's dags/ plus ``ref``'s fiji_project.py as ``fiji_project_before``; False when they are equal."""
    shutil.copytree(REPO / "dags", folder)
    old = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:dags/fiji_project.py"], check=True,
                         capture_output=True, text=True).stdout
    if old == (REPO / "dags" / "fiji_project.py").read_text():
        return False
    assert 'dag_id="fiji_project"' in old, "the DAG id is no longer written dag_id=\"fiji_project\""
    (folder / f"{BEFORE}.py").write_text(old.replace('dag_id="fiji_project"', f'dag_id="{BEFORE}"'))
    return True


def timed_run(stack: Stack, root: Path, dag_id: str, warmup: bool) -> dict:
    t0 = time.time()
    run_id = stack.trigger(dag_id, {"project": "demo"})
    state = stack.wait_run(dag_id, run_id)
    wall = time.time() - t0
    tis = {ti["task_id"]: ti for ti in stack.task_instances(dag_id, run_id)}
    run = next(json.loads(p.read_text()) for p in (root / "demo" / "output").glob("*/run.json")
               if json.loads(p.read_text())["airflow_run_id"] == run_id)
    return {"dag": dag_id, "run": run_id, "state": state, "wall_s": round(wall, 2), "warmup": warmup,
            "tasks": len(tis), "array_s": run["phases"]["run_array"]["seconds"],
            "record_s": tis["record"].get("duration"),
            "retries": sum(1 for ti in tis.values() if (ti["try_number"] or 0) > 1)}


def summary(rows: list[dict]) -> dict:
    warm = [r for r in rows if not r["warmup"]]
    return {"median_wall_s": statistics.median(r["wall_s"] for r in warm),
            "median_array_s": statistics.median(r["array_s"] for r in warm),
            "median_record_s": statistics.median(r["record_s"] for r in warm if r["record_s"] is not None),
            "tasks": warm[0]["tasks"], "runs": len(warm)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", default="main", help="git ref whose DAG shape runs alternately (default main)")
    args = ap.parse_args()
    from sciops.imaging.synthetic import make_images

    home = Path(tempfile.mkdtemp(prefix="sciops-bench-deploy-"))
    root = home / "projects"
    root.mkdir()
    shutil.copytree(REPO / "examples" / "demo", root / "demo")
    make_images(root / "demo" / "input", DEMO_COUNTS)
    shapes = ["fiji_project"] + ([BEFORE] if dags_with_before(home / "dags", args.before) else [])
    own = f"bench_deploy_{os.getpid()}"   # databases of its own: never another stack's
    stack = Stack(home / "airflow", testbed("postgres.sh", "fresh-db", f"{own}_meta"),
                  testbed("postgres.sh", "fresh-db", f"{own}_ledger"), storage_root=root, dags_folder=home / "dags")
    stack.up()
    try:
        for dag_id in shapes[1:]:
            stack.wait_for_dag(dag_id)
            stack.unpause(dag_id)
        rows = []
        for i in range(args.runs + 1):
            for dag_id in (shapes if i % 2 == 0 else shapes[::-1]):   # alternate which shape goes first
                row = timed_run(stack, root, dag_id, warmup=i == 0)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        stack.stop()
        for db in ("meta", "ledger"):
            subprocess.run(["bash", str(REPO / "scripts" / "testbed" / "postgres.sh"), "drop-db", f"{own}_{db}"],
                           capture_output=True)
    out = {"benchmark": "deploy", "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
           "goal_s": 20, "before": args.before,
           "shapes": {dag_id: summary([r for r in rows if r["dag"] == dag_id]) for dag_id in shapes},
           "all_first_try": all(r["retries"] == 0 and r["state"] == "success" for r in rows), "runs": rows}
    if len(shapes) == 2:
        out["ratio_wall_new_over_before"] = round(out["shapes"]["fiji_project"]["median_wall_s"]
                                                  / out["shapes"][BEFORE]["median_wall_s"], 3)
    dest = REPO / "bench" / "results" / "deploy.json"
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}))
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
