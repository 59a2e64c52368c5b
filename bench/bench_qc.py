#!/usr/bin/env python3
"""Benchmark: what QC overlays cost, and report.html at 100,000 images (issue 33).

* **Overlay cost** through the real task runner and driver (``sciops_task.main``, one JVM a pass,
  ImageJ 1 under Xvfb, the shipped count_nuclei), with ``qc_images`` none, sample and all in the same
  run, alternating, ``--repeats`` times: on BBBC002 (../shared/data/bbbc002, 50 DAPI images of 512 x 512,
  Ljosa et al. 2012; read in place) and on ``--tiny`` synthetic 64 x 64 images (20,000 for the issue's
  figure; fewer for a quick look). For each: the overlays' own seconds (the driver's clock around
  them, ``qc_seconds`` in the status lines) as a share of the macro's seconds, the overlays drawn,
  their size, and the wall time of a pass against ``none``'s (medians; ratios).
* **The report at 100,000 images**: a collated run folder made up (a 1,536-well plate of 65 fields a
  well, 10 objects an image, outliers planted, overlays for the ``sample`` share), then
  :func:`sciops.reporting.results.analyse` and ``report.write``: seconds, report.html's size, and
  its render time in headless Chromium (Debian's, through Playwright): navigation start to the
  page's own ``data-rendered`` mark, median of ``--repeats``.

Writes bench/results/qc.json. Run: ``python bench/bench_qc.py [--tiny 20000] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results" / "qc.json"
MODES = ("none", "sample", "all")


def one_pass(input_dir: Path, images: list[str], launcher: dict, mode: str, keep: Path | None = None) -> dict:
    """One JVM over ``images`` with ``qc_images: mode``: macro and overlay seconds, overlays, wall
    (``keep``: the first overlay copied there)."""
    with tempfile.TemporaryDirectory(prefix="sciops-bench-qc-") as tmp:
        manifest = {"run_id": "bench", "work_dir": f"{tmp}/work", "run_dir": tmp, "input_dir": str(input_dir),
                    "macro_path": str(MACRO_DIR / "count_nuclei.ijm"), "driver_path": str(JOB_DIR / "driver.ijm"),
                    "chunks": [images], "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher,
                    "memory_mb": 2048, "image_timeout_s": 120, "stall_seconds": 60, "qc_images": mode}
        Path(tmp, "manifest.json").write_text(json.dumps(manifest))
        t0 = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                code = st.main(["--manifest", f"{tmp}/manifest.json", "--task", "1"])
            finally:
                sys.stdout = stdout
        wall = time.perf_counter() - t0
        recs = st.read_statuses(st.status_path(f"{tmp}/work", 1))
        ok = [r for r in recs.values() if r["status"] == "ok"]
        sizes = [Path(st.image_output_dir(f"{tmp}/work", r["image"]), "qc.png").stat().st_size
                 for r in ok if r.get("qc")]
        if keep is not None and sizes:
            shutil.copy(Path(st.image_output_dir(f"{tmp}/work", ok[0]["image"]), "qc.png"), keep)
        macro = sum(r["seconds"] for r in ok)
        qc = sum(r.get("qc_seconds") or 0 for r in ok)
        return {"exit": code, "ok": len(ok), "wall_s": round(wall, 3), "macro_s": round(macro, 3),
                "qc_s": round(qc, 3), "qc_share": round(qc / macro, 4) if macro else None, "overlays": len(sizes),
                "overlay_kb_median": round(statistics.median(sizes) / 1024, 1) if sizes else None}


def overlay_cost(name: str, input_dir: Path, images: list[str], launcher: dict, repeats: int,
                 modes: tuple[str, ...] = MODES) -> dict:
    passes: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(repeats):
        for mode in modes if r % 2 == 0 else modes[::-1]:   # alternating: drift in the machine hits all modes
            passes[mode].append(one_pass(input_dir, images, launcher, mode))
            print(f"{name} {mode} #{r + 1}: {passes[mode][-1]}", flush=True)
    med = {m: {k: statistics.median(p[k] for p in ps) for k in ("wall_s", "macro_s", "qc_s", "overlays")}
           for m, ps in passes.items()}
    out = {"images": len(images), "repeats": repeats, "passes": passes, "median": med}
    for m in (m for m in modes if m != "none"):
        out[f"{m}_qc_share_median"] = statistics.median(p["qc_share"] for p in passes[m])
        out[f"{m}_wall_ratio_vs_none"] = round(med[m]["wall_s"] / med["none"]["wall_s"], 3)
        sizes = [p["overlay_kb_median"] for p in passes[m] if p["overlay_kb_median"]]
        out[f"{m}_overlay_kb_median"] = statistics.median(sizes) if sizes else None
        out[f"{m}_overlays_per_100k"] = round(med[m]["overlays"] / len(images) * 100_000)
    return out


def tiny_images(folder: Path, n: int) -> list[str]:
    from sciops.imaging.synthetic import nuclei_image, write_tiff

    folder.mkdir(parents=True, exist_ok=True)
    base = [nuclei_image(3 + k % 4, size=64, radius=5, seed=k) for k in range(20)]
    names = []
    for i in range(n):
        name = f"t{i:06d}.tif"
        write_tiff(folder / name, base[i % 20])
        names.append(name)
    return names


def big_report(folder: Path, images: int, repeats: int, png: Path) -> dict:
    """A made-up collated run of ``images`` images, analysed and rendered; its size and render time."""
    import numpy as np
    import pandas as pd

    from sciops.reporting import report, results
    from sciops.reporting.collate import overlay_path
    from sciops_node import qc

    rng = np.random.default_rng(0)
    wells = [f"{r}{c:02d}" for r in [chr(65 + i) for i in range(26)] + [f"A{chr(65 + i)}" for i in range(6)]
             for c in range(1, 49)]
    names = [f"plate1/{wells[i % len(wells)]}_f{i // len(wells):02d}.tif" for i in range(images)]
    counts = rng.poisson(40, images).astype(float)
    counts[rng.choice(images, 50, replace=False)] = 0
    counts[[i for i, n in enumerate(names) if n.startswith("plate1/C07_")]] = 160   # an outlier well
    summary = pd.DataFrame({"image": names, "task": np.arange(images) // 400 + 1, "attempt": 1,
                            "seconds": rng.gamma(4, 0.05, images).round(3), "n_results": counts.astype(int),
                            "count": counts, "mean_area": rng.normal(120, 10, images).round(2),
                            "mean_intensity": rng.normal(80, 8, images).round(2)})
    sampled = np.array([qc.sampled(n) for n in names]) | (counts == 0) | (counts == 160)
    summary["qc_overlay"] = [overlay_path(n) if s else "" for n, s in zip(names, sampled)]
    folder.mkdir(parents=True, exist_ok=True)
    summary.to_csv(folder / "summary.csv", index=False)
    pd.DataFrame(columns=["image", "task", "attempt", "status", "error"]).to_csv(folder / "failures.csv", index=False)
    per = 10
    objects = pd.DataFrame({"image": np.repeat(names, per), "Area": rng.normal(120, 15, images * per),
                            "Mean": rng.normal(80, 8, images * per)})
    objects.to_parquet(folder / "results.parquet")
    for path in summary.loc[summary["qc_overlay"] != "", "qc_overlay"]:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(png, target)   # a real overlay (BBBC002's), linked: 4,000 files, one on disk
    t0 = time.perf_counter()
    res = results.analyse(folder)
    analyse_s = time.perf_counter() - t0
    doc = {"run_id": "bench", "airflow_run_id": "manual__bench", "project": "bench", "status": "success",
           "images": {"ok": images, "failed": 0, "total": images}, "results": res, "phases": {}, "cost": {}}
    t0 = time.perf_counter()
    path = report.write(folder, doc)
    render_s = time.perf_counter() - t0
    out = {"images": images, "overlays_on_disk": int(sampled.sum()), "analyse_s": round(analyse_s, 2),
           "write_report_s": round(render_s, 2), "report_mb": round(path.stat().st_size / 1e6, 3),
           "outliers": res["outliers_total"], "outlier_wells": res["plate"]["outlier_wells"],
           "warnings": [w["check"] for w in res["warnings"]]}
    out["chromium_render_s"] = chromium_render(path, repeats)
    return out


def chromium_render(path: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        for _ in range(repeats):
            page = b.new_page()
            t0 = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-rendered=yes]")
            times.append(time.perf_counter() - t0)
            page.close()
        b.close()
    return {"median": round(statistics.median(times), 3), "all": [round(t, 3) for t in times]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", type=int, default=2000, help="tiny images for the overlay cost (issue: 20000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-images", type=int, default=100_000)
    ap.add_argument("--parts", default="bbbc002,tiny,report")
    ap.add_argument("--modes", default=",".join(MODES), help="qc_images modes to compare (none first)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    modes = tuple(args.modes.split(","))
    if "none" not in modes or not set(modes) <= set(MODES):
        ap.error(f"--modes: some of {', '.join(MODES)}, with none (the baseline the others are compared to)")
    launcher = detect_launcher("imagej1")
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "bbbc002" in parts:
        bbbc = DATA / "bbbc002"
        images = sorted(p.name for p in bbbc.iterdir() if p.suffix.upper() == ".TIF")
        result["bbbc002"] = overlay_cost("bbbc002", bbbc, images, launcher, args.repeats, modes)
    with tempfile.TemporaryDirectory(prefix="sciops-bench-qc-data-") as tmp:
        if "tiny" in parts:
            names = tiny_images(Path(tmp, "tiny"), args.tiny)
            result["tiny"] = overlay_cost("tiny", Path(tmp, "tiny"), names, launcher, args.repeats, modes)
        if "report" in parts:
            png = Path(tmp, "overlay.png")
            one = one_pass(DATA / "bbbc002", ["CPvalid1_340_40x_Tiles_p0002DAPI.TIF"], launcher, "all", keep=png)
            assert one["overlays"] == 1 and png.is_file(), one
            result["report"] = big_report(Path(tmp, "report"), args.report_images, args.repeats, png)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
