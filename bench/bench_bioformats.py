#!/usr/bin/env python3
"""Benchmark: what reading microscope files through Bio-Formats costs (issues 18 and 38).

* **Seconds per series** (part ``series``): ``count_nuclei`` through the real task runner and driver (one
  JVM, ImageJ 1 under Xvfb, Bio-Formats from scripts/bioformats.sh) over OME-TIFFs of 20, 200 and 2,000
  series (256 × 256, 16-bit; units ``file#0`` …: one task over the first ``--task-units`` of them, the
  file's memo left by the probe as validate leaves it, the driver's series reader keeping the file open)
  against 20 of the same planes as single TIFFs (ImageJ's own reader), and the 20-series file through the
  Bio-Formats Importer (what every series cost before issue 38), in the same run, order rotating; medians
  of ``--repeats`` of the macro's own seconds per unit (the runner's clock: the series' open included) and
  of the task's wall seconds per unit. Also the probe (validate's read) of each file, and of the files
  again from their memo.
* **A plate through fiji_project** (part ``plate``): ``airflow dags test fiji_project`` on the local
  backend (2 slots here) over a project of one 2,000-series OME-TIFF and one of the 20-series file, in the
  same run: validate's seconds, run_array's, the median seconds per series (summary.csv), the units ok,
  and the peak resident memory of the JVMs (``ps`` sampled every 0.5 s: the sum over the run's JVMs, and
  the largest one).
* **JVM heap for a 4 GB file** (part ``heap``): a 4 GiB single-series OME-TIFF (64 planes of 8192 × 4096,
  16-bit) opened with the Bio-Formats Importer in ImageJ 1 with and without ``use_virtual_stack``: the heap
  in use after the open (``IJ.currentMemory()``), the peak resident set of the JVM, and the smallest
  ``-Xmx`` of a halving search (from 8 GB down to 256 MB) with which the open succeeds.

Writes bench/results/bioformats.json. Run: ``python bench/bench_bioformats.py`` (after scripts/setup.sh);
``--parts series,plate,heap``; ``--big-dir`` is where the large files are written (default: a temporary folder).
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


def run_units(input_dir: Path, units: list[str], launcher: dict, memo: Path | None) -> tuple[float, float, dict]:
    """(median macro seconds per unit, wall seconds of the task, counts) for one task over ``units``.
    ``memo``: the files' memo folder (the manifest's ``bioformats_memo``: the series reader); None: the Importer."""
    with tempfile.TemporaryDirectory(prefix="sciops-bench-bf-") as tmp:
        manifest = {"run_id": "bench", "work_dir": f"{tmp}/work", "run_dir": tmp, "input_dir": str(input_dir),
                    "macro_path": str(MACRO_DIR / "count_nuclei.ijm"), "driver_path": str(JOB_DIR / "driver.ijm"),
                    "chunks": [units], "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher,
                    "memory_mb": 1536, "image_timeout_s": 300, "stall_seconds": 60, "macro_args": {},
                    "channel": "1", "qc_images": "none", **({"bioformats_memo": str(memo)} if memo else {})}
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


def want_counts(n: int) -> list[int]:
    return [5 + (i * 7) % 23 for i in range(n)]


def plate_file(folder: Path, n: int) -> Path:
    from sciops.imaging.synthetic import ome_tiff

    path = folder / f"plate{n}.ome.tif"
    if not path.exists():
        ome_tiff(path, want_counts(n), size=256, channels=1)
    return path


def per_series(launcher: dict, repeats: int, sizes: list[int], task_units: int, big_dir: Path | None) -> dict:
    import numpy as np
    import tifffile

    from sciops.imaging import bioformats
    from sciops.imaging.synthetic import nuclei_image

    with tempfile.TemporaryDirectory(prefix="sciops-bench-bf-", dir=big_dir) as tmp:
        folder, memo = Path(tmp), Path(tmp, "bfmemo")
        for i, count in enumerate(want_counts(SERIES)):   # the same planes as series 0-19, one plain TIFF each
            tifffile.imwrite(folder / f"single_{i:03d}.tif", (nuclei_image(count, 256, seed=i).astype(np.uint16) * 64))
        for i in range(SERIES, task_units):   # and again, as many as a task's units (linked)
            os.link(folder / f"single_{i % SERIES:03d}.tif", folder / f"single_{i:03d}.tif")
        files = {n: plate_file(folder, n).name for n in sizes}
        # validate's read: every file in one JVM (after a one-series file that pays Bio-Formats' start), the
        # metadata parsed, then again from the memos it left
        plate_file(folder, 1)
        probe = {}
        for how in ("parsed", "memo"):
            t0 = time.perf_counter()
            got = bioformats.probe([files.get(1, "plate1.ome.tif"), *files.values()], folder, launcher, 1536,
                                   memo_dir=memo)
            probe[f"probe_seconds_{how}"] = round(time.perf_counter() - t0, 2)
            for n, name in files.items():
                assert len(got[name]["series"]) == n and got[name]["read"]["from"] == how, got[name]
                probe[f"{n}_series_{how}"] = {"read_seconds_in_jvm": got[name]["read"]["seconds"],
                                              "planes_read": got[name]["read"]["planes"]}
        small = min(sizes)
        cases = {f"single_tiffs_{small}": ([f"single_{i:03d}.tif" for i in range(small)], None),
                 f"importer_{small}_series": ([f"{files[small]}#{i}" for i in range(small)], None),
                 f"single_tiffs_{task_units}": ([f"single_{i:03d}.tif" for i in range(task_units)], None)}
        for n, name in files.items():
            cases[f"reader_{n}_series"] = ([f"{name}#{i}" for i in range(min(n, task_units))], memo)
        runs: dict[str, list] = {label: [] for label in cases}
        for r in range(repeats):
            order = list(cases)
            order = order[r % len(order):] + order[:r % len(order)]
            for label in order:
                units, m = cases[label]
                runs[label].append(run_units(folder, units, launcher, m))
        out: dict = {"probe": probe}
        for label, got in runs.items():
            units = cases[label][0]
            want = want_counts(SERIES) * (len(units) // SERIES + 1) if label.startswith("single") else \
                want_counts(len(units))
            out[label] = {"units": len(units),
                          "median_macro_seconds_per_unit": statistics.median(g[0] for g in got),
                          "median_task_wall_seconds_per_unit": statistics.median(g[1] for g in got) / len(units),
                          "wall_runs": [round(g[1], 2) for g in got],
                          "counts_right": sum(c == w for c, w in zip(got[0][2].values(), want))}
        for label in runs:   # against plain TIFFs in a task of as many units
            base = out[f"single_tiffs_{len(cases[label][0])}"]["median_macro_seconds_per_unit"]
            out[label]["ratio_to_plain_tiff"] = round(out[label]["median_macro_seconds_per_unit"] / base, 2)
        out["plane"] = "256 x 256, 16-bit, one channel"
        return out


class _PeakJvm:
    """The peak resident memory of the JVMs whose command line names ``mark``: ps every 0.5 s."""

    def __init__(self, mark: str):
        import threading

        self.mark, self.total_kb, self.largest_kb, self.stop = mark, 0, 0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.wait(0.5):
            out = subprocess.run(["ps", "-eo", "rss=,args="], capture_output=True, text=True).stdout
            rss = [int(line.split(None, 1)[0]) for line in out.splitlines()
                   if "java" in line and self.mark in line and "ij.ImageJ" in line]
            self.total_kb, self.largest_kb = max(self.total_kb, sum(rss)), max([self.largest_kb, *rss])

    def __enter__(self) -> _PeakJvm:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def plate_run(folder: Path, n: int, tmp: Path) -> dict:
    """fiji_project over a project holding one ``n``-series file (local backend), in its own AIRFLOW_HOME."""
    import pandas as pd

    home, storage = tmp / f"airflow{n}", tmp / f"storage{n}"
    project = storage / f"plate{n}"
    (project / "input").mkdir(parents=True)
    os.link(plate_file(folder, n), project / "input" / f"plate{n}.ome.tif")
    (project / "src").mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "SCIOPS_STORAGE_ROOT": str(storage)}
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    conf = {"project": project.name, "file_pattern": "*.ome.tif", "memory": "1536M", "qc_images": "none"}
    t0 = time.perf_counter()
    with _PeakJvm(str(storage)) as peak:
        proc = subprocess.run(["airflow", "dags", "test", "fiji_project", "-c", json.dumps(conf)], env=env,
                              capture_output=True, text=True)
    wall = time.perf_counter() - t0
    runs = sorted((project / "output").glob("*/run.json"))
    if proc.returncode != 0 or not runs:
        raise SystemExit(f"plate run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = json.loads(runs[-1].read_text())
    summary = pd.read_csv(runs[-1].parent / "summary.csv")
    phases = {k: v.get("seconds") for k, v in run["phases"].items()}
    got = dict(zip(summary["image"], summary["count"].astype(int)))
    right = sum(got.get(f"plate{n}.ome.tif#{i}") == w for i, w in enumerate(want_counts(n)))
    read = json.loads((runs[-1].parent / "work" / "series.json").read_text())[f"plate{n}.ome.tif"]["read"]
    return {"series": n, "ok": run["images"]["ok"], "counts_right": right, "wall_seconds": round(wall, 1),
            "validate_seconds": phases.get("validate"), "validate_metadata_read": read,
            "run_array_seconds": phases.get("run_array"),
            "median_seconds_per_series": float(summary["seconds"].median()),
            "run_array_seconds_per_series": round(phases.get("run_array", 0) / n, 4),
            "jvm_peak_rss_mb_sum": round(peak.total_kb / 1024),
            "jvm_peak_rss_mb_largest": round(peak.largest_kb / 1024),
            "tasks": json.loads((runs[-1].parent / "work" / "plan.json").read_text())["tasks"]}


def plate(sizes: list[int], big_dir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="sciops-bench-plate-", dir=big_dir) as tmp:
        folder = Path(tmp)
        out = {f"{n}_series": plate_run(folder, n, folder) for n in sizes}
        small, large = out[f"{min(sizes)}_series"], out[f"{max(sizes)}_series"]
        out["ratio_median_seconds_per_series"] = round(large["median_seconds_per_series"]
                                                       / small["median_seconds_per_series"], 2)
        out["cpus"] = os.cpu_count()
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
    ap.add_argument("--parts", default="series,plate,heap")
    ap.add_argument("--series", default="20,200,2000", help="the files' series counts (part series)")
    ap.add_argument("--task-units", type=int, default=200, help="units of one task (part series)")
    ap.add_argument("--plate", default="20,2000", help="the files' series counts (part plate)")
    args = ap.parse_args()
    launcher = detect_launcher("imagej1")
    assert launcher and launcher.get("plugins_dir"), "no ImageJ 1 with Bio-Formats: run scripts/setup.sh"
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # a part run alone keeps the others
    out.update(bioformats=launcher.get("bioformats_version"), cpus=os.cpu_count())
    parts = args.parts.split(",")
    if "series" in parts:
        out["per_series"] = per_series(launcher, args.repeats, [int(n) for n in args.series.split(",")],
                                       args.task_units, args.big_dir)
        print(json.dumps(out["per_series"], indent=1))
    if "plate" in parts:
        out["plate"] = plate([int(n) for n in args.plate.split(",")], args.big_dir)
        print(json.dumps(out["plate"], indent=1))
    if "heap" in parts:
        with tempfile.TemporaryDirectory(prefix="sciops-bench-big-", dir=args.big_dir) as big:
            out["heap_4gb"] = big_file(launcher, Path(big))
        print(json.dumps(out["heap_4gb"], indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
