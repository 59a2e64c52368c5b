#!/usr/bin/env python3
"""Benchmark: how well count_nuclei counts and outlines nuclei on public images nobody tuned it on.

Sets (see bench/data/accuracy/README.md): seven groups of the Data Science Bowl 2018 stage-1 fluorescence images
(CC0; per-nucleus label images, committed with their SHA-256) and BBBC002 (two human counts per image, read from
../shared/data/bbbc002 when present). For every set and every macro version:

* **count error**: mean over the set's images of ``|count - truth| / truth`` (BBBC002: truth = mean of the two
  human counters);
* **object precision / recall / F1** (label sets): a predicted object matches a ground-truth nucleus when their
  IoU is at least 0.5 (at most one match each), pooled over the set's objects; **splits**: ground-truth nuclei
  that two or more predicted objects lie mostly (>= half their area) inside; **merges**: predicted objects
  holding two or more ground-truth nuclei mostly (>= half their area) inside;
* **seconds per image**: the median of the task runner's per-image time (the macro's own, in one JVM per set).

The macro runs through the real task runner and driver (``sciops_task.main``, ImageJ 1 under Xvfb) as an array task
would, with ``save_labels=true`` so it writes its label image. The previous version (``--baseline-rev``, default
HEAD: run it before committing a macro change, or name the commit) runs in the same invocation; a version that
predates ``save_labels`` gets two lines after its last Analyze Particles (show Count Masks, save it): its objects are
unchanged. An image that fails is run once more in a JVM of its own (under load the runner now and then takes an
untitled AWT window for a dialog); a second failure counts as the worst answer (count error 1).

**Defaults chosen leave-one-set-out.** ``CANDIDATES`` lists the candidate settings of the macro's automatic rules
(each a set of macro arguments, the first being the macro's own defaults). For each set S, the candidate with the
best mean objective over the *other* sets is scored on S: the **held-out** figure. The candidate best over all sets
is the shipped default; its score on S is the **in-sample** figure. The objective of a set is its count error plus
(1 - F1) where labels exist. No setting depends on which set an image comes from.

Writes bench/results/accuracy.json and bench/results/accuracy.md (the table docs/accuracy.md shows).
Run: ``python bench/bench_accuracy.py`` (after scripts/setup.sh); ``--sets``, ``--candidates`` and ``--no-baseline``
narrow it while developing.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include" / "job")]

import sciops_task as st  # noqa: E402
from sciops import JOB_DIR, MACRO_DIR  # noqa: E402
from sciops.imaging.accuracy import IOU, leave_one_set_out, match, summarise  # noqa: E402

DATA = REPO / "bench" / "data" / "accuracy"
BBBC002 = REPO.parent / "shared" / "data" / "bbbc002"
RESULTS = REPO / "bench" / "results" / "accuracy.json"
TABLE = REPO / "bench" / "results" / "accuracy.md"

#: Candidate settings of the nucleus step's automatic rules (include/fiji_macros/nuclei.ijm): name -> macro
#: arguments. The first is the macro's own defaults (no arguments): it must be the one chosen on all sets, or the
#: macro's defaults are not what the bench supports. Chosen leave-one-set-out (module docstring).
CANDIDATES: dict[str, dict[str, str]] = {
    "defaults": {},                                               # clip at p99.9, blur 0.15 r, min 0.1 area
    "linear": {"intensity": "linear"},                            # no clipping
    "log": {"intensity": "log"},                                  # log of the height above the dark level
    "blur0.25": {"blur_factor": "0.25"},                          # the previous macro's blur
    "linear_blur0.25": {"intensity": "linear", "blur_factor": "0.25"},   # the previous macro's rules
    "blur0.2": {"blur_factor": "0.2"},
    "min0.25": {"min_factor": "0.25"},                            # stricter debris rule
}


# ----------------------------------------------------------------------------------------------- data

def label_sets() -> dict[str, Path]:
    """The committed sets, after checking every file against MANIFEST.sha256."""
    bad = []
    for line in (DATA / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = DATA / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(rel)
    if bad:
        sys.exit(f"bench/data/accuracy: {len(bad)} file(s) missing or changed against MANIFEST.sha256: {bad[:5]}")
    return {d.name: d for d in sorted(DATA.iterdir()) if (d / "images").is_dir() and (d / "labels").is_dir()}


def read_label(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def bbbc002_truth() -> dict[str, float]:
    lines = (BBBC002 / "BBBC002_v1_counts.txt").read_text().replace("\r", "").splitlines()[1:]
    return {name + ".TIF": (float(a) + float(b)) / 2 for name, a, b in (ln.split("\t")[:3] for ln in lines)}


# ----------------------------------------------------------------------------------------------- running

def instrumented_baseline(rev: str) -> str:
    """The macro as ``rev`` had it, writing its Count Masks image as labels.tif (its objects unchanged)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:include/fiji_macros/count_nuclei.ijm"],
                         capture_output=True, text=True, check=True).stdout
    if "save_labels" in src:
        return src
    last = src.rindex('run("Analyze Particles...",')
    end = src.index(";", last) + 1
    call = src[last:end]
    patched = re.sub(r'display clear( add)?"', r'display clear\1 show=[Count Masks]"', call)
    assert patched != call, f"{rev}'s count_nuclei: its last Analyze Particles call changed shape: {call}"
    return src[:last] + patched + '\nsaveAs("Tiff", output + "/labels.tif");' + src[end:]


def run_macro(macro: Path, input_dir: Path, images: list[str], launcher: dict, macro_args: dict) -> dict[str, dict]:
    """Each image's ``count``, ``seconds`` and label image (``labels``, None when not written)."""
    import tifffile

    with tempfile.TemporaryDirectory(prefix="sciops-bench-accuracy-") as tmp:
        manifest = {"run_id": "bench", "work_dir": f"{tmp}/work", "run_dir": tmp, "input_dir": str(input_dir),
                    "macro_path": str(macro), "driver_path": str(JOB_DIR / "driver.ijm"), "chunks": [images],
                    "expected_outputs": ["results.csv", "summary.csv"], "launcher": launcher, "memory_mb": 1536,
                    "image_timeout_s": 300, "stall_seconds": 60,
                    "macro_args": {"save_labels": "true", **macro_args}}
        mpath = Path(tmp, "manifest.json")
        mpath.write_text(json.dumps(manifest))
        rc = st.main(["--manifest", str(mpath), "--task", "1"])
        assert rc == 0, f"{macro.name} on {input_dir}: task exited {rc}"
        statuses = st.read_statuses(st.status_path(f"{tmp}/work", 1))
        failed = [img for img, rec in statuses.items() if rec["status"] != "ok"]
        if failed:
            # once more, in a JVM of their own: under load the runner now and then takes an untitled AWT window
            # for a dialog ("showed a dialog \"\""); a second failure stands (and counts as the worst answer)
            manifest.update(work_dir=f"{tmp}/retry", chunks=[failed])
            mpath.write_text(json.dumps(manifest))
            st.main(["--manifest", str(mpath), "--task", "1"])
            again = st.read_statuses(st.status_path(f"{tmp}/retry", 1))
            for img in failed:
                if img in again:
                    statuses[img] = {**again[img], "retried": True, "work": f"{tmp}/retry"}
        out = {}
        for image, rec in statuses.items():
            folder = Path(st.image_output_dir(rec.get("work", f"{tmp}/work"), image))
            if rec["status"] != "ok":
                out[image] = {"count": None, "seconds": rec.get("seconds"), "error": rec.get("error")}
                continue
            summary = next(csv.DictReader((folder / "summary.csv").open()))
            labels = folder / "labels.tif"
            out[image] = {"count": int(summary["count"]), "seconds": rec["seconds"],
                          "retried": rec.get("retried", False),
                          "summary": summary,
                          "labels": tifffile.imread(labels) if labels.is_file() else None}
        return out


def score(macro: Path, launcher: dict, macro_args: dict, sets: dict[str, Path], with_bbbc002: bool,
          keep: Path | None = None) -> dict:
    result = {}
    for name, folder in sets.items():
        images = sorted(p.name for p in (folder / "images").glob("*.png"))
        got = run_macro(macro, folder / "images", images, launcher, macro_args)
        per_image = {}
        for img in images:
            truth = read_label(folder / "labels" / img)
            rec = got.get(img, {"count": None, "seconds": None})
            entry = {"count": rec["count"], "truth": int(len(np.unique(truth)) - (truth.min() == 0)),
                     "seconds": rec["seconds"], **({"retried": True} if rec.get("retried") else {})}
            if rec.get("labels") is not None:
                entry["objects"] = match(truth, rec["labels"])
                if keep:
                    import tifffile

                    (keep / name).mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(keep / name / f"{Path(img).stem}.tif", rec["labels"])
            if rec.get("summary"):
                entry["self_check"] = {k: v for k, v in rec["summary"].items()
                                       if k not in ("count", "mean_area", "mean_intensity")}
            per_image[img] = entry
        result[name] = {**summarise(per_image), "per_image": per_image}
        print(f"    {name}: {json.dumps({k: v for k, v in result[name].items() if k != 'per_image'})}", flush=True)
    if with_bbbc002:
        truth = bbbc002_truth()
        images = sorted(truth)
        got = run_macro(macro, BBBC002, images, launcher, macro_args)
        per_image = {img: {"count": got.get(img, {}).get("count"), "truth": truth[img],
                           "seconds": got.get(img, {}).get("seconds")} for img in images}
        result["bbbc002"] = {**summarise(per_image), "per_image": per_image}
        print(f"    bbbc002: {json.dumps({k: v for k, v in result['bbbc002'].items() if k != 'per_image'})}",
              flush=True)
    return result


# ----------------------------------------------------------------------------------------------- report

def fmt(v, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def table(res: dict) -> str:
    loso = res["leave_one_set_out"]
    base = res.get("baseline", {})
    lines = [f"Defaults chosen on all sets: `{loso['chosen_on_all_sets']}`. Count error = mean absolute relative error "
             "per image; F1 at IoU ≥ 0.5. Held-out = the candidate chosen without the set; in-sample = chosen with it.",
             "",
             "| set | images | nuclei | count error held-out | in-sample | previous macro | F1 held-out | in-sample "
             "| previous | splits / merges (in-sample) | s/image new | previous |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in loso["sets"].items():
        h, i, b = r["held_out"], r["in_sample"], base.get(s, {})
        nuclei = i.get("objects_truth", "counts")
        lines.append(f"| {s} | {i['images']} | {nuclei} | {fmt(h['count_error'], True)} | "
                     f"{fmt(i['count_error'], True)} | {fmt(b.get('count_error'), True)} | {fmt(h.get('f1'))} | "
                     f"{fmt(i.get('f1'))} | {fmt(b.get('f1'))} | "
                     f"{i.get('splits', '–')} / {i.get('merges', '–')} | {fmt(i['seconds_per_image'])} | "
                     f"{fmt(b.get('seconds_per_image'))} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    from sciops.imaging.imagej import detect_launcher

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", help="comma-separated set names (default: all, and bbbc002 when present)")
    ap.add_argument("--candidates", help="comma-separated candidate names (default: all)")
    ap.add_argument("--baseline-rev", default="HEAD", help="git revision whose count_nuclei is the previous macro")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--macro", default=str(MACRO_DIR / "count_nuclei.ijm"))
    ap.add_argument("--keep", help="folder to write each candidate's label images into (to look at them)")
    args = ap.parse_args()
    launcher = detect_launcher("imagej1")
    if not launcher:
        sys.exit("needs ImageJ (scripts/setup.sh)")
    sets = label_sets()
    wanted = args.sets.split(",") if args.sets else [*sets, "bbbc002"]
    with_bbbc002 = "bbbc002" in wanted and (BBBC002 / "BBBC002_v1_counts.txt").is_file()
    sets = {k: v for k, v in sets.items() if k in wanted}
    cands = {k: v for k, v in CANDIDATES.items() if not args.candidates or k in args.candidates.split(",")}
    t0 = time.perf_counter()
    res: dict = {"benchmark": "accuracy", "iou": IOU, "candidates": cands, "sets": [*sets] +
                 (["bbbc002"] if with_bbbc002 else []), "scores": {}}
    for name, margs in cands.items():
        print(f"candidate {name} {margs}:", flush=True)
        res["scores"][name] = score(Path(args.macro), launcher, margs, sets, with_bbbc002,
                                    Path(args.keep) / name if args.keep else None)
    if not args.no_baseline:
        print(f"previous macro ({args.baseline_rev}):", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            old = Path(tmp, "count_nuclei_previous.ijm")
            old.write_text(instrumented_baseline(args.baseline_rev))
            step_path = f"{args.baseline_rev}:include/fiji_macros/nuclei.ijm"
            step = subprocess.run(["git", "-C", str(REPO), "show", step_path], capture_output=True, text=True)
            if step.returncode == 0:   # a version with the shared nucleus step runs it from beside itself
                Path(tmp, "nuclei.ijm").write_text(step.stdout)
            res["baseline"] = score(old, launcher, {}, sets, with_bbbc002)
        res["baseline_rev"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline_rev],
                                             capture_output=True, text=True).stdout.strip()
    res["leave_one_set_out"] = leave_one_set_out(
        {c: {s: {k: v for k, v in r.items() if k != "per_image"} for s, r in sc.items()}
         for c, sc in res["scores"].items()})
    if "baseline" in res:
        res["baseline"] = {s: r for s, r in res["baseline"].items()}
    res["seconds"] = round(time.perf_counter() - t0)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)

    def plain(o):
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items() if k != "labels"}
        return o

    RESULTS.write_text(json.dumps(plain(res), indent=1))
    md = table({**res, "baseline": {s: {k: v for k, v in r.items() if k != "per_image"}
                                    for s, r in res.get("baseline", {}).items()}})
    TABLE.write_text(md)
    print(md)
    print(f"wrote {RESULTS} and {TABLE} in {res['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
