#!/usr/bin/env python3
"""Benchmark: the nightly scan over many projects on S3: seconds to decide what is new, and requests made.

--projects projects of --images images each (tiny synthetic files, in 50 plate folders) in
one bucket on the testbed's moto_server, each opted in (``nightly: true``) and with
--processed of its images already in its processed-images index. ``sciops.run.nightly.scan``
decides every project; its S3 calls are counted (every obstore call, each listing page
included, and every botocore call). The goal: one listing per project, no request per image.

The baseline, in the same run: ``aws s3 ls --recursive`` of the whole bucket with the AWS
CLI, the least any "what is new" decision must read (every key once). Medians over
--repeats; writes bench/results/nightly_scan.json. Run: ``python bench/bench_nightly_scan.py``
(after scripts/setup.sh; the full size, 50 x 2,000, takes ~10 min to upload to moto).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
AWS = shutil.which("aws", path="/usr/bin") or shutil.which("aws")
CONN_ID = "bench_s3"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--projects", type=int, default=50)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--processed", type=float, default=0.9, help="fraction of each project's images processed")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["bash", str(REPO / "scripts/testbed/s3.sh"), "start"], check=True, capture_output=True)
    conn = json.loads(subprocess.run(["bash", str(REPO / "scripts/testbed/s3.sh"), "conn", "open"], check=True,
                                     capture_output=True, text=True).stdout)
    endpoint = conn["extra"]["endpoint_url"]
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(conn)
    os.environ["SCIOPS_WORK_ROOT"] = str(Path(os.environ.get("TMPDIR", "/tmp"), f"sciops-bench-work-{os.getpid()}"))
    from sciops.run import nightly
    from sciops.run import processed
    from sciops.run.project import Project, sha256
    from sciops.storage.s3 import S3Client
    from sciops.storage.root import S3Storage

    bucket = f"bench-nightly-{uuid.uuid4().hex[:8]}"
    storage = S3Storage(f"s3://{bucket}", CONN_ID)
    storage.client.create_bucket()
    names = [f"proj{p:03d}" for p in range(args.projects)]
    keys = [(n, f"input/plate{i % 50:02d}/img{i:05d}.tif") for n in names for i in range(args.images)]
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda nk: storage.client.put(storage.key(*nk), b"II*\0tiny", 8), keys))
        list(pool.map(lambda n: storage.client.put(storage.key(n, "project.yaml"), b"nightly: true\n", 14), names))
    upload = time.perf_counter() - t
    macro = Project("x", Path("/nonexistent")).resolve_macro("count_nuclei")
    index_key = processed.key(sha256(macro), {})
    for n in names:
        ids = processed.content_ids(storage, n)
        done = sorted(ids)[:int(len(ids) * args.processed)]
        processed.add(storage, n, index_key, {rel: ids[rel] for rel in done}, "bench")

    calls: Counter = Counter()
    per_image: list[str] = []
    real_call, real_boto = S3Client.call, S3Client.boto_call

    def counted(self, what, fn):
        calls[what.split(" ")[0]] += 1
        if what.startswith("HEAD") and "/input/" in what:
            per_image.append(what)
        return real_call(self, what, fn)

    def counted_boto(self, op, what, **params):
        calls[op] += 1
        return real_boto(self, op, what, **params)

    S3Client.call, S3Client.boto_call = counted, counted_boto
    env = {**os.environ, "AWS_ACCESS_KEY_ID": conn["login"], "AWS_SECRET_ACCESS_KEY": conn["password"],
           "AWS_DEFAULT_REGION": "us-east-1"}
    scan_s, aws_s, requests = [], [], []
    for rep in range(args.repeats):
        for tool in (("aws", "sciops") if rep % 2 == 0 else ("sciops", "aws")):
            if tool == "aws":
                t = time.perf_counter()
                subprocess.run([AWS, "--endpoint-url", endpoint, "s3", "ls", "--recursive", f"s3://{bucket}"],
                               env=env, check=True, capture_output=True)
                aws_s.append(time.perf_counter() - t)
            else:
                calls.clear()
                t = time.perf_counter()
                decisions = nightly.scan(S3Storage(f"s3://{bucket}", CONN_ID))
                scan_s.append(time.perf_counter() - t)
                requests.append(sum(calls.values()))
                assert [d.action for d in decisions] == ["run"] * args.projects, decisions[:3]
                want = args.images - int(args.images * args.processed)
                assert all(d.new == want for d in decisions), [d.new for d in decisions][:5]
        print(f"repeat {rep + 1}: scan {scan_s[-1]:.2f} s ({requests[-1]} requests: {dict(calls)}), "
              f"aws s3 ls --recursive {aws_s[-1]:.2f} s", flush=True)
    med = {"scan": statistics.median(scan_s), "aws_ls_recursive": statistics.median(aws_s)}
    result = {
        "benchmark": "nightly_scan", "projects": args.projects, "images_per_project": args.images,
        "processed_fraction": args.processed, "repeats": args.repeats, "upload_seconds": round(upload, 1),
        "endpoint": "moto_server (scripts/testbed/s3.sh)", "seconds": {"scan": scan_s, "aws_ls_recursive": aws_s},
        "median_seconds": med, "ratio_scan_over_aws_ls": med["scan"] / med["aws_ls_recursive"],
        "requests_per_scan": requests, "requests_by_kind_last_scan": dict(calls),
        "requests_per_project": statistics.median(requests) / args.projects, "per_image_requests": len(per_image),
        "goal": "one listing per project, no request per image",
        # a listing of 1,000 keys a page, and a fixed handful of small reads per project, whatever its size
        "goal_met": not per_image and calls["list"] / args.projects <= 4 + -(-args.images // 1000),
        "note": "requests: obstore calls (each listing page counts, and the call that finds a listing's end) and "
                "botocore calls; per project: project.yaml read to see whether it takes part (HEAD + GET), the "
                "bucket checked, the listing of its top level, of src/ and of input/ (pages of 1,000), project.yaml "
                "and src/ fetched into the working copy (not again once there), the index read (HEAD + GET). "
                "Baseline: the AWS CLI listing every key of the bucket once",
    }
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=60)
    shutil.rmtree(os.environ["SCIOPS_WORK_ROOT"], ignore_errors=True)
    out = REPO / "bench" / "results" / "nightly_scan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"scan {med['scan']:.2f} s vs aws s3 ls --recursive {med['aws_ls_recursive']:.2f} s "
          f"(ratio {result['ratio_scan_over_aws_ls']:.2f}); {result['requests_per_project']:.1f} requests per "
          f"project, {len(per_image)} per image; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
