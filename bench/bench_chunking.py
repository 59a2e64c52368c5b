#!/usr/bin/env python3
"""Benchmark: one JVM per chunk vs one JVM per image, and count_nuclei's accuracy.

On BBBC002 (../shared/data/bbbc002: 50 DAPI images with two human counts each;
Ljosa et al., Nature Methods 9:637, 2012; read in place, never copied into the repo):

* seconds per image with all images in one chunk (one JVM) and with one JVM per
  image, measured in the same run, alternating, ``--repeats`` times; medians and ratio;
* mean absolute relative error of count_nuclei against the mean of the two human
  counters (target <= 16 %, the human-vs-human band).

Writes bench/results/chunking.json. Run: ``make bench`` (or with the venv active,
``python bench/bench_chunking.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include" / "job")]

import sciops_task as st  # noqa: E402

from sciops import JOB_DIR, MACRO_DIR  # noqa: E402
from sciops.imaging.imagej import detect_launcher  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "bbbc002"


def human_counts() -> dict[str, float]:
    lines = (DATA / "BBBC002_v1_counts.txt").read_text().replace("\r", "").splitlines()[1:]
    out = {}
    for line in lines:
        name, a, b = line.split("\t")[:3]
        out[name + ".TIF"] = (float(a) + float(b)) / 2
    return out


def run(images: list[str], per_task: int, launcher: dict, macro_args: dict) -> tuple[float, dict]:
    """Process ``images`` sequentially in chunks of ``per_task``; wall seconds and statuses."""
    with tempfile.TemporaryDirectory(prefix="sciops-bench-") as tmp:
        chunks = [images[i:i + per_task] for i in range(0, len(images), per_task)]
        manifest = {"run_id": "bench", "work_dir": f"{tmp}/work", "run_dir": tmp, "input_dir": str(DATA),
                    "macro_path": str(MACRO_DIR / "count_nuclei.ijm"), "driver_path": str(JOB_DIR / "driver.ijm"),
                    "chunks": chunks, "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher,
                    "memory_mb": 1024, "image_timeout_s": 120, "stall_seconds": 30, "macro_args": macro_args}
        mpath = Path(tmp, "manifest.json")
        mpath.write_text(json.dumps(manifest))
        t0 = time.perf_counter()
        for t in range(1, len(chunks) + 1):
            rc = st.main(["--manifest", str(mpath), "--task", str(t)])
            assert rc == 0, f"task {t} exited {rc}"
        wall = time.perf_counter() - t0
        counts = {}
        for t in range(1, len(chunks) + 1):
            for image, rec in st.read_statuses(st.status_path(f"{tmp}/work", t)).items():
                summary = Path(st.image_output_dir(f"{tmp}/work", image), "summary.csv")
                counts[image] = int(summary.read_text().splitlines()[1].split(",")[0]) if rec["status"] == "ok" else None
        return wall, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=50, help="first N images of BBBC002")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "chunking.json"))
    args = ap.parse_args()
    launcher = detect_launcher("imagej1")
    if not launcher or not DATA.is_dir():
        sys.exit("needs ImageJ (scripts/setup.sh) and ../shared/data/bbbc002")
    truth = human_counts()
    images = sorted(p.name for p in DATA.glob("*.TIF"))[: args.images]
    macro_args = {}
    chunked, per_image = [], []
    counts = {}
    for r in range(args.repeats):   # alternate, so drift on a noisy machine hits both alike
        wall, counts = run(images, len(images), launcher, macro_args)
        chunked.append(wall / len(images))
        wall, _ = run(images, 1, launcher, macro_args)
        per_image.append(wall / len(images))
        print(f"repeat {r + 1}: chunk {chunked[-1]:.3f} s/image, per-image JVM {per_image[-1]:.3f} s/image",
              flush=True)
    errors = {img: abs(counts[img] - truth[img]) / truth[img] for img in images if counts.get(img) is not None}
    human_gap = [abs(float(a) - float(b)) / ((float(a) + float(b)) / 2) for a, b in
                 (line.split("\t")[1:3] for line in
                  (DATA / "BBBC002_v1_counts.txt").read_text().replace("\r", "").splitlines()[1:])]
    result = {
        "benchmark": "jvm_per_chunk_vs_per_image",
        "data": "BBBC002v1 (Ljosa et al., Nature Methods 9:637, 2012)",
        "images": len(images), "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_per_image": {"one_jvm_per_chunk": chunked, "one_jvm_per_image": per_image},
        "median_seconds_per_image": {"one_jvm_per_chunk": statistics.median(chunked),
                                     "one_jvm_per_image": statistics.median(per_image)},
        "speedup_median": statistics.median(per_image) / statistics.median(chunked),
        "accuracy": {
            "macro": "count_nuclei (defaults)", "reference": "mean of the two human counters",
            "images_counted": len(errors), "mean_abs_relative_error": statistics.mean(errors.values()),
            "median_abs_relative_error": statistics.median(errors.values()),
            "human_vs_human_mean_abs_relative_difference": statistics.mean(human_gap),
            "target": 0.16,
            "per_image": {img: {"count": counts[img], "human_mean": truth[img]} for img in images},
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    acc = result["accuracy"]
    print(f"median s/image: chunk {result['median_seconds_per_image']['one_jvm_per_chunk']:.3f}, "
          f"per-image JVM {result['median_seconds_per_image']['one_jvm_per_image']:.3f}; "
          f"speed-up x{result['speedup_median']:.1f}")
    print(f"count_nuclei vs humans: MARE {acc['mean_abs_relative_error']:.3f} "
          f"(human vs human {acc['human_vs_human_mean_abs_relative_difference']:.3f}, target <= 0.16)")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
