#!/usr/bin/env python3
"""Benchmark: array efficiency on this machine's Grid Engine, against a naive baseline.

Same images, same run. Two datasets: ``bbbc002`` (../shared/data/bbbc002, 50 DAPI
images of 512x512 repeated to --images; ~0.05 s per image) and ``camera`` (50 synthetic
2048x2048 nucleus images, the size of a typical microscope camera frame, repeated):

* SciOps: one array job, ``slots`` tasks of ``images / slots`` images, one JVM each,
  submitted and watched over SSH exactly as the DAG does (sync ArrayRun).
  Efficiency = ideal / measured, where ideal = warm-JVM seconds per image (the runner's
  per-image times, summed) / slots and measured = submit-to-all-accounted wall time.
* Naive: one job and one JVM per image (what hand-written qsub loops do), wall time.
* Scheduler commands per poll for an array of 10 and of 1,000 tasks (counted at the runner).

Needs the testbed (scripts/testbed/gridengine.sh and sshd.sh, as root). Efficiency is
the median over ``--repeats`` runs (this machine is noisy). Writes bench/results/sge_array.json. Run: ``python bench/bench_sge_array.py``.
"""
from __future__ import annotations

import argparse
import grp
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include" / "job")]
DATA = REPO.parent / "shared" / "data" / "bbbc002"

import sciops_task as st  # noqa: E402

from sciops import JOB_DIR, MACRO_DIR  # noqa: E402
from sciops.arrays.run import ArrayRun  # noqa: E402
from sciops.arrays.ssh import SSHRunner  # noqa: E402
from sciops.arrays.schedulers.base import ArraySpec  # noqa: E402
from sciops.arrays.schedulers.sge import SGEScheduler  # noqa: E402


class CountingRunner:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def run(self, argv, **kw):
        self.calls.append(argv[0])
        return self.inner.run(argv, **kw)


def testbed() -> str:
    for script in ("gridengine.sh", "sshd.sh"):
        subprocess.run(["bash", str(REPO / "scripts" / "testbed" / script), "start"], check=True,
                       capture_output=True)
    conn = subprocess.run(["bash", str(REPO / "scripts" / "testbed" / "sshd.sh"), "conn"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ["AIRFLOW_CONN_SCIOPS_CLUSTER"] = conn
    return "sciops_cluster"


def shared_dir() -> Path:
    base = Path("/srv/sciops-testbed")
    base.mkdir(parents=True, exist_ok=True)
    d = base / f"bench-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    os.chown(d, 0, grp.getgrnam("sciops").gr_gid)
    os.chmod(d, 0o2775)
    return d


def camera_images(folder: Path) -> list[Path]:
    """50 synthetic 2048x2048 frames with 300-700 nuclei each (made once per run)."""
    from sciops.imaging.synthetic import make_images

    counts = {f"cam_{i:02d}.tif": 300 + 8 * i for i in range(50)}
    make_images(folder, counts, size=2048)
    return sorted(folder.glob("*.tif"))


def make_input(root: Path, n: int, src: list[Path]) -> list[str]:
    inp = root / "input"
    inp.mkdir()
    names = []
    for i in range(n):
        name = f"r{i // len(src):03d}_{src[i % len(src)].name}"
        os.symlink(src[i % len(src)], inp / name)
        names.append(name)
    return names


def manifest_for(root: Path, chunks: list[list[str]], launcher: dict) -> dict:
    work = root / "work"
    (work / "job").mkdir(parents=True)
    for d in (work / "status", root / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    for src in (JOB_DIR / "sciops_task.py", JOB_DIR / "driver.ijm", MACRO_DIR / "count_nuclei.ijm"):
        shutil.copy(src, work / "job" / src.name)
    # the runner's package, beside it (as sciops.run.project.stage_job_files copies it)
    shutil.copytree(JOB_DIR / "sciops_node", work / "job" / "sciops_node", ignore=shutil.ignore_patterns("__pycache__"))
    m = {"run_id": root.name, "run_dir": str(root), "work_dir": str(work), "input_dir": str(root / "input"),
         "macro_path": str(work / "job" / "count_nuclei.ijm"), "driver_path": str(work / "job" / "driver.ijm"),
         "chunks": chunks, "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher,
         "memory_mb": 1024, "image_timeout_s": 300, "stall_seconds": 60, "max_attempts": 1, "macro_args": {}}
    (work / "manifest.json").write_text(json.dumps(m))
    return m


def per_image_seconds(work: Path) -> list[float]:
    out = []
    for p in (work / "status").glob("task-*.jsonl"):
        out += [r["seconds"] for r in st.read_statuses(str(p)).values() if r["status"] == "ok"]
    return out


def run_array(conn: str, root: Path, chunks: list[list[str]], launcher: dict, poll: float) -> tuple[float, int]:
    m = manifest_for(root, chunks, launcher)
    runner = SSHRunner(conn)
    runner.run(["true"])   # connected (and Airflow's SSH hook imported) before the clock starts
    run = ArrayRun(SGEScheduler(), runner, m, lambda s: None, poll_seconds=poll, python="python3")
    t0 = time.perf_counter()
    result = run.run()
    wall = time.perf_counter() - t0
    ok = len(per_image_seconds(root / "work"))
    assert not result["failed_tasks"], result
    return wall, ok


def commands_per_poll(conn: str, root: Path, n_tasks: int, polls: int = 5) -> float:
    runner = CountingRunner(SSHRunner(conn))
    sched = SGEScheduler()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    job = sched.submit(runner, ArraySpec(name=f"sciops-cpp{n_tasks}", command=["sleep", "30"],
                                         task_ids=list(range(1, n_tasks + 1)), log_dir=str(root / "logs"),
                                         workdir=str(root)))
    runner.calls.clear()
    for _ in range(polls):
        states = sched.status(runner, job, list(range(1, n_tasks + 1)))
        assert len(states) == n_tasks
    per_poll = len(runner.calls) / polls
    sched.cancel(runner.inner, job)
    return per_poll


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between status polls")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="array runs per dataset (median reported)")
    ap.add_argument("--datasets", default="bbbc002,camera", help="comma-separated: bbbc002, camera")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "sge_array.json"))
    args = ap.parse_args()
    conn = testbed()
    os.umask(0o002)   # jobs run as the testbed's 'sciops' user, in this group-shared folder
    slots = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    launcher = {"kind": "imagej1", "java": shutil.which("java"), "ij_jar": "/usr/share/java/ij.jar",
                "xvfb": shutil.which("Xvfb")}
    base = shared_dir()
    results = {"benchmark": "sge_array_efficiency", "slots": slots, "poll_seconds": args.poll, "datasets": {}}
    try:
        wanted = args.datasets.split(",")
        sources = {}
        if "bbbc002" in wanted:
            sources["bbbc002"] = sorted(DATA.glob("*.TIF"))
        if "camera" in wanted:
            sources["camera"] = camera_images(base / "camera-src")
        for dataset, src in sources.items():
            reps = []
            for r in range(args.repeats):
                arr = base / f"array-{dataset}-{r}"
                arr.mkdir()
                names = make_input(arr, args.images, src)
                per_task = -(-len(names) // slots)
                wall, ok = run_array(conn, arr, [names[i:i + per_task] for i in range(0, len(names), per_task)],
                                     launcher, args.poll)
                secs = per_image_seconds(arr / "work")
                ideal = sum(secs) / slots
                # where the wall time went: submit → task starts, task spans, last task end → accounted
                hist = json.loads((arr / "work" / "attempts.json").read_text())[0]
                spans = [json.loads(p.read_text()) for p in (arr / "work" / "status").glob("task-*.attempt-1.json")]
                breakdown = {"submit_to_task_starts": [round(x["start"] - hist["submitted_at"], 2) for x in spans],
                             "task_wall_seconds": [round(x["end"] - x["start"], 2) for x in spans],
                             "last_end_to_accounted": round(hist["ended_at"] - max(x["end"] for x in spans), 2)}
                reps.append({"images_ok": ok, "warm_jvm_seconds_per_image_median": statistics.median(secs),
                             "ideal_seconds": ideal, "array_wall_seconds": wall, "efficiency": ideal / wall,
                             "breakdown": breakdown})
                print(f"{dataset} #{r + 1}: {len(names)} images on {slots} slots in {wall:.1f} s; ideal {ideal:.1f} s; "
                      f"efficiency {ideal / wall:.3f}; {json.dumps(breakdown)}", flush=True)
                shutil.rmtree(arr, ignore_errors=True)
            wall = statistics.median(r["array_wall_seconds"] for r in reps)
            res = {"images": args.images, "repeats": reps,
                   "median_efficiency": statistics.median(r["efficiency"] for r in reps),
                   "median_array_wall_seconds": wall}
            print(f"{dataset}: median efficiency {res['median_efficiency']:.3f} over {len(reps)} run(s)", flush=True)
            if not args.skip_naive:
                naive = base / f"naive-{dataset}"
                naive.mkdir()
                names_n = make_input(naive, args.images, src)
                nwall, nok = run_array(conn, naive, [[n] for n in names_n], launcher, args.poll)
                res.update({"naive_wall_seconds": nwall, "naive_images_ok": nok, "speedup_vs_naive": nwall / wall})
                print(f"{dataset} naive (one job+JVM per image): {nwall:.1f} s; SciOps x{nwall / wall:.1f} faster",
                      flush=True)
            results["datasets"][dataset] = res
        cpp = base / "cpp"
        cpp.mkdir()
        results["commands_per_poll"] = {"10_tasks": commands_per_poll(conn, cpp, 10),
                                        "1000_tasks": commands_per_poll(conn, cpp, 1000)}
        print(f"commands per poll: {results['commands_per_poll']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = results
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
