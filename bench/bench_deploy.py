"""REST-triggered demo runs on a warm deployment, end to end (issue 37: 20 s or less on 2 cores).

Starts Airflow as docker-compose.yaml does (tests/deployment/stack.py: api-server, scheduler,
dag-processor, triggerer as processes, the testbed's PostgreSQL; needs root for the testbed),
with ports and databases of its own (a metadata database and a ledger database named after this
process, free ports for the api-server, the log servers and the health check), so it runs beside
another stack (the deployment tests, another engineer's benchmark). It runs the demo once per DAG
shape to warm up (DAG parsed, JVM files cached), then ``--runs`` more of each, the shapes
alternating, each timed from the REST trigger to the run's ``success``; also the array phase
(run.json) and the ``record`` task (start to end, from Airflow); per task, its running seconds and
the hop before it (from its last upstream's end to its start, split at Airflow's ``scheduled_when``
and ``queued_when``), per run the seconds in which no task was running (``idle_s``), and at the end the
scheduler's CPU share over 20 s with no run going (what its idle loop costs).

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
from datetime import datetime
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


def _t(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def upstreams(stack: Stack, dag_id: str) -> dict[str, list[str]]:
    """Each task's upstream task ids, from the DAG's tasks as the API gives them."""
    status, data = stack.request("GET", f"/api/v2/dags/{dag_id}/tasks")
    assert status == 200, (status, data)
    ups: dict[str, list[str]] = {t["task_id"]: [] for t in data["tasks"]}
    for t in data["tasks"]:
        for down in t["downstream_task_ids"]:
            ups[down].append(t["task_id"])
    return ups


def hops(tis: dict[str, dict], ups: dict[str, list[str]], t0: float) -> dict[str, dict]:
    """Per task: its running seconds, and the hop before it, from the last upstream's end (the trigger
    for a first task) to its start, split at ``scheduled_when`` and ``queued_when``."""
    out = {}
    for tid, ti in tis.items():
        start, end = _t(ti["start_date"]), _t(ti["end_date"])
        if start is None or end is None:   # skipped: never ran
            out[tid] = {"state": ti["state"]}
            continue
        ready = max((_t(tis[u]["end_date"]) or 0 for u in ups.get(tid, []) if u in tis), default=t0)
        sched, queued = _t(ti.get("scheduled_when")), _t(ti.get("queued_when"))
        out[tid] = {"state": ti["state"], "run_s": round(end - start, 2), "hop_s": round(start - ready, 2),
                    "to_scheduled_s": round(sched - ready, 2) if sched else None,
                    "to_queued_s": round(queued - (sched or ready), 2) if queued else None,
                    "to_start_s": round(start - (queued or sched or ready), 2)}
    return out


def idle(tis: dict[str, dict], t0: float, t1: float) -> float:
    """Seconds of the run's wall time in which no task was running (the hops on the critical path)."""
    spans = sorted((_t(ti["start_date"]), _t(ti["end_date"])) for ti in tis.values()
                   if ti["start_date"] and ti["end_date"])
    busy, upto = 0.0, t0
    for a, b in spans:
        a = max(a, upto)
        if b > a:
            busy, upto = busy + b - a, b
    return round((t1 - t0) - busy, 2)


def timed_run(stack: Stack, root: Path, dag_id: str, warmup: bool, ups: dict[str, list[str]]) -> dict:
    t0 = time.time()
    run_id = stack.trigger(dag_id, {"project": "demo"})
    state = stack.wait_run(dag_id, run_id)
    wall = time.time() - t0
    tis = {ti["task_id"]: ti for ti in stack.task_instances(dag_id, run_id)}
    per_task = hops(tis, ups, t0)
    run = next(json.loads(p.read_text()) for p in (root / "demo" / "output").glob("*/run.json")
               if json.loads(p.read_text())["airflow_run_id"] == run_id)
    return {"dag": dag_id, "run": run_id, "state": state, "wall_s": round(wall, 2), "warmup": warmup,
            "tasks": len(tis), "array_s": run["phases"]["run_array"]["seconds"],
            "record_s": tis["record"].get("duration"),
            "retries": sum(1 for ti in tis.values() if (ti["try_number"] or 0) > 1),
            "idle_s": idle(tis, t0, t0 + wall), "per_task": per_task}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (/proc: its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_share(stack: Stack, seconds: float = 20) -> float:
    """The scheduler's CPU share (of one core) with no run going: what its idle loop costs."""
    pid = stack.procs["scheduler"].pid
    c0, t0 = cpu_seconds(pid), time.time()
    time.sleep(seconds)
    return round((cpu_seconds(pid) - c0) / (time.time() - t0), 4)


def summary(rows: list[dict]) -> dict:
    warm = [r for r in rows if not r["warmup"]]
    return {"median_wall_s": statistics.median(r["wall_s"] for r in warm),
            "median_array_s": statistics.median(r["array_s"] for r in warm),
            "median_record_s": statistics.median(r["record_s"] for r in warm if r["record_s"] is not None),
            "median_idle_s": statistics.median(r["idle_s"] for r in warm),
            "tasks": warm[0]["tasks"], "runs": len(warm),
            "per_task": {tid: {k: statistics.median(r["per_task"][tid][k] for r in warm)
                               for k in ("run_s", "hop_s", "to_scheduled_s", "to_queued_s", "to_start_s")
                               if all(r["per_task"][tid].get(k) is not None for r in warm)}
                         for tid in warm[0]["per_task"]}}


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
        ups = {dag_id: upstreams(stack, dag_id) for dag_id in shapes}
        rows = []
        for i in range(args.runs + 1):
            for dag_id in (shapes if i % 2 == 0 else shapes[::-1]):   # alternate which shape goes first
                row = timed_run(stack, root, dag_id, warmup=i == 0, ups=ups[dag_id])
                print(json.dumps({k: v for k, v in row.items() if k != "per_task"}), flush=True)
                rows.append(row)
        scheduler_idle = idle_cpu_share(stack)
    finally:
        stack.stop()
        for db in ("meta", "ledger"):
            subprocess.run(["bash", str(REPO / "scripts" / "testbed" / "postgres.sh"), "drop-db", f"{own}_{db}"],
                           capture_output=True)
    out = {"benchmark": "deploy", "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
           "goal_s": 20, "before": args.before, "scheduler_idle_cpu_share": scheduler_idle,
           "scheduler_idle_sleep_time": stack.env.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "1 (default)"),
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
