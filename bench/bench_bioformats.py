#!/usr/bin/env python3
"""Benchmark: what reading microscope files through Bio-Formats costs (issue 18).

* **Seconds per series**: ``count_nuclei`` through the real task runner and driver (one JVM, ImageJ 1
  under Xvfb, Bio-Formats from scripts/bioformats.sh) over a 20-series OME-TIFF (units ``file#0`` …
  ``file#19``: the driver opens each series with the Bio-Formats Importer and hands the macro a plain
  TIFF of it) against the same 20 planes as single TIFFs (ImageJ's own reader), in the same run, order
  alternating; medians of ``--repeats`` of the macro's own seconds per image (the runner's clock: the
  Bio-Formats open included) and of the task's wall time. Also the probe ``validate`` runs on the file.
* **JVM heap for a 4 GB file**: a 4 GiB single-series OME-TIFF (64 planes of 8192 × 4096, 16-bit) opened
  with the Bio-Formats Importer in ImageJ 1 with and without ``use_virtual_stack``: the heap in use
  after the open (``IJ.currentMemory()``), the peak resident set of the JVM, and the smallest ``-Xmx``
  of a halving search (from 8 GB down to 256 MB) with which the open succeeds.

Writes bench/results/bioformats.json. Run: ``python bench/bench_bioformats.py`` (after scripts/setup.sh);
``--big-dir`` is where the 4 GB file is written (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include" / "job")]

import sciops_task as st  # noqa: E402

from sciops import JOB_DIR, MACRO_DIR  # noqa: E402
from sciops.imaging.imagej import detect_launcher  # noqa: E402

RESULTS = REPO / "bench" / "results" / "bioformats.json"
SERIES = 20
#: A whole 4 GB open takes ~40 s here; one that runs out of heap shows a dialog and never returns.
TRY_TIMEOUT_S = 150


def run_units(input_dir: Path, units: list[str], launcher: dict) -> tuple[float, float, dict[str, int]]:
    """(median macro seconds per unit, wall seconds of the task, counts) for one task over ``units``."""
    with tempfile.TemporaryDirectory(prefix="sciops-bench-bf-") as tmp:
        manifest = {"run_id": "bench", "work_dir": f"{tmp}/work", "run_dir": tmp, "input_dir": str(input_dir),
                    "macro_path": str(MACRO_DIR / "count_nuclei.ijm"), "driver_path": str(JOB_DIR / "driver.ijm"),
                    "chunks": [units], "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher,
                    "memory_mb": 1536, "image_timeout_s": 300, "stall_seconds": 60, "macro_args": {},
                    "channel": "1"}
        mpath = Path(tmp, "manifest.json")
        mpath.write_text(json.dumps(manifest))
        t0 = time.perf_counter()
        rc = st.main(["--manifest", str(mpath), "--task", "1"])
        wall = time.perf_counter() - t0
        assert rc == 0, f"task exited {rc}"
        recs = st.read_statuses(st.status_path(f"{tmp}/work", 1))
        assert all(r["status"] == "ok" for r in recs.values()), recs
        counts = {}
        for unit in units:
            lines = Path(st.image_output_dir(f"{tmp}/work", unit), "summary.csv").read_text().splitlines()
            counts[unit] = int(lines[1].split(",")[0])
        return statistics.median(r["seconds"] for r in recs.values()), wall, counts


def per_series(launcher: dict, repeats: int) -> dict:
    import numpy as np
    import tifffile

    from sciops.imaging import bioformats
    from sciops.imaging.synthetic import nuclei_image, ome_tiff

    want = [5 + (i * 7) % 23 for i in range(SERIES)]
    with tempfile.TemporaryDirectory(prefix="sciops-bench-bf-") as tmp:
        folder = Path(tmp)
        ome_tiff(folder / "plate.ome.tif", want, size=512, channels=1)
        singles = []
        for i, count in enumerate(want):   # the same planes, one plain TIFF each
            name = f"single_{i:02d}.tif"
            tifffile.imwrite(folder / name, (nuclei_image(count, 512, seed=i).astype(np.uint16) * 64))
            singles.append(name)
        units = [f"plate.ome.tif#{i}" for i in range(SERIES)]
        t0 = time.perf_counter()
        probed = bioformats.probe(["plate.ome.tif"], folder, launcher, 1536)
        probe_s = time.perf_counter() - t0
        assert len(probed["plate.ome.tif"]["series"]) == SERIES, probed
        runs: dict[str, list] = {"ome_tiff_series": [], "single_tiffs": []}
        for r in range(repeats):
            order = [("ome_tiff_series", units), ("single_tiffs", singles)]
            for label, images in (order if r % 2 == 0 else order[::-1]):
                runs[label].append(run_units(folder, images, launcher))
        out = {}
        for label, got in runs.items():
            counts = got[0][2]
            out[label] = {"median_macro_seconds_per_image": statistics.median(g[0] for g in got),
                          "median_task_wall_seconds": statistics.median(g[1] for g in got),
                          "wall_runs": [round(g[1], 2) for g in got],
                          "counts_right": sum(c == w for c, w in zip(counts.values(), want))}
        a, b = out["ome_tiff_series"], out["single_tiffs"]
        out["ratio_macro_seconds"] = a["median_macro_seconds_per_image"] / b["median_macro_seconds_per_image"]
        out["ratio_wall"] = a["median_task_wall_seconds"] / b["median_task_wall_seconds"]
        out["extra_seconds_per_series"] = (a["median_task_wall_seconds"] - b["median_task_wall_seconds"]) / SERIES
        out["probe_seconds_20_series_file"] = round(probe_s, 2)
        out["series"], out["plane"] = SERIES, "512 x 512, 16-bit"
        return out


OPEN_MACRO = """
setBatchMode(true);
run("Bio-Formats Importer", "open=[%s] color_mode=Default view=Hyperstack stack_order=XYCZT%s");
print("SCIOPS_OPENED\\t" + nSlices + "\\t" + IJ.currentMemory());
"""


def open_big(path: Path, virtual: bool, xmx_mb: int, launcher: dict) -> dict:
    """Open ``path`` in a JVM of ``xmx_mb``; whether it worked, the heap in use, the JVM's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="sciops-bench-bf-") as tmp:
        macro = Path(tmp, "open.ijm")
        macro.write_text(OPEN_MACRO % (path, " use_virtual_stack" if virtual else ""))
        with _display(launcher) as display:
            env = dict(os.environ, DISPLAY=display)
            argv = ["/usr/bin/time", "-f", "SCIOPS_RSS_KB\t%M", launcher["java"], f"-Xmx{xmx_mb}m",
                    f"-Dplugins.dir={launcher['plugins_dir']}", "-jar", launcher["ij_jar"], "-port0", "-batch",
                    str(macro)]
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            try:
                stdout, stderr = proc.communicate(timeout=TRY_TIMEOUT_S)
            except subprocess.TimeoutExpired:   # ImageJ shows a dialog (out of memory) and waits for ever
                os.killpg(proc.pid, 9)
                stdout, stderr = proc.communicate()
            seconds = time.perf_counter() - t0
        rss = next((int(ln.split("\t")[1]) for ln in stderr.splitlines() if ln.startswith("SCIOPS_RSS_KB")), 0)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("SCIOPS_OPENED")), None)
        ok = line is not None and "OutOfMemory" not in stdout + stderr
        return {"xmx_mb": xmx_mb, "opened": ok, "seconds": round(seconds, 2),
                "heap_used_mb": round(int(line.split("\t")[2]) / 2**20) if ok else None,
                "jvm_peak_rss_mb": round(rss / 1024)}


class _display:
    def __init__(self, launcher: dict):
        self.xvfb = st.Xvfb(launcher["xvfb"])

    def __enter__(self) -> str:
        return self.xvfb.start()

    def __exit__(self, *exc) -> None:
        self.xvfb.stop()


def big_file(launcher: dict, big_dir: Path) -> dict:
    import numpy as np
    import tifffile

    path = big_dir / "big4g.ome.tif"
    planes, h, w = 64, 4096, 8192
    if not path.exists() or path.stat().st_size < planes * h * w * 2:
        plane = (np.random.default_rng(0).integers(0, 4000, (h, w))).astype(np.uint16)
        with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tw:
            tw.write((plane for _ in range(planes)), shape=(planes, h, w), dtype=np.uint16,
                     metadata={"axes": "ZYX", "Name": "big"})
    out = {"file": f"{path.stat().st_size / 2**30:.2f} GiB, {planes} planes of {w} x {h}, 16-bit"}
    for virtual in (False, True):
        tries = []
        xmx = 8192
        while xmx >= 256:
            got = open_big(path, virtual, xmx, launcher)
            tries.append(got)
            if not got["opened"]:
                break
            xmx //= 2
        worked = [t for t in tries if t["opened"]]
        out["virtual" if virtual else "whole"] = {
            "smallest_xmx_mb_that_opened": min((t["xmx_mb"] for t in worked), default=None),
            "largest_xmx_mb_that_failed": max((t["xmx_mb"] for t in tries if not t["opened"]), default=None),
            "tries": tries}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-dir", type=Path, default=None)
    ap.add_argument("--parts", default="series,heap")
    args = ap.parse_args()
    launcher = detect_launcher("imagej1")
    assert launcher and launcher.get("plugins_dir"), "no ImageJ 1 with Bio-Formats: run scripts/setup.sh"
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # a part run alone keeps the others
    out.update(bioformats=launcher.get("bioformats_version"), cpus=os.cpu_count())
    parts = args.parts.split(",")
    if "series" in parts:
        out["per_series"] = per_series(launcher, args.repeats)
        print(json.dumps(out["per_series"], indent=1))
    if "heap" in parts:
        with tempfile.TemporaryDirectory(prefix="sciops-bench-big-", dir=args.big_dir) as big:
            out["heap_4gb"] = big_file(launcher, Path(big))
        print(json.dumps(out["heap_4gb"], indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
