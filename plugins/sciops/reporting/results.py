"""What the macro measured, at a glance (issue 33): per-measure statistics, outliers and sanity warnings.

:func:`analyse` reads a collated run folder (``summary.csv``: one row per ok image, the macro's
summary columns; ``failures.csv``; ``results.parquet``: one row per object) and returns the
``results`` section of run.json, which report.html (:mod:`sciops.reporting.results_html`), the
Slack end message and ``sciops results`` show:

- ``measures``: each numeric summary column (at most :data:`MEASURES_MAX`; ``n_results``, the
  objects per image, when the macro wrote no summary) with n, median, quartiles, MAD, min, max;
- ``key``: the measure the plate view, the gallery labels and the dashboard follow (a count when
  there is one: ``count``, ``nuclei``, ... else the first);
- ``outliers``: images whose value of a measure is more than :data:`OUTLIER_MADS` robust standard
  deviations (1.4826 x MAD) from the median, images with none of the key measure where the
  median image has some, and the failed images with their reason;
- ``warnings``: the segmentation checks of :func:`sanity` (fragmenting, debris steering the
  threshold, many empty images, a bimodal distribution), each one sentence with the images most
  affected;
- ``plate``: :func:`sciops.reporting.plate.plate_of` when the image names carry well positions.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sciops.reporting import plate as plate_mod
from sciops.reporting.cells import plain
from sciops.reporting.plate import robust_z

#: The runner's columns in summary.csv: bookkeeping, not measures (n_results only when nothing else).
BOOKKEEPING = ("image", "task", "attempt", "seconds", "n_results", "file", "series", "series_name", "channel",
               "qc_overlay", "qc_drawn")
#: Measures shown (histogram and statistics) at most; the rest are in summary.csv.
MEASURES_MAX = 12
#: Robust z beyond which a value is an outlier (|x - median| / (1.4826 MAD)).
OUTLIER_MADS = 3.5
#: Outliers listed in run.json (all are counted; report.html lists these too).
OUTLIERS_LISTED = 200
#: Names of count-like measures, preferred as the key measure in this order.
COUNT_NAMES = ("count", "nuclei", "n_nuclei", "cells", "objects", "n_results")


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def measures_of(summary: pd.DataFrame) -> list[str]:
    """The numeric summary columns of the macro (``n_results`` when it wrote none)."""
    cols = [c for c in summary.columns if c not in BOOKKEEPING and not str(c).startswith("qc_")
            and pd.api.types.is_numeric_dtype(summary[c]) and summary[c].notna().any()]
    if not cols and "n_results" in summary.columns:
        cols = ["n_results"]
    return cols[:MEASURES_MAX]


def key_measure(cols: list[str]) -> str | None:
    lower = {str(c).lower(): c for c in cols}
    return next((lower[n] for n in COUNT_NAMES if n in lower), cols[0] if cols else None)


def stats(values: pd.Series) -> dict[str, Any]:
    v = values.dropna().to_numpy(float)
    if not len(v):
        return {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    mad = float(np.median(np.abs(v - med)))
    return {"n": int(len(v)), "median": _r(med), "q1": _r(q1), "q3": _r(q3), "iqr": _r(q3 - q1), "mad": _r(mad),
            "min": _r(v.min()), "max": _r(v.max()), "zeros": int((v == 0).sum())}


def _r(x: float) -> float:
    return float(f"{float(x):.6g}")


def outliers(summary: pd.DataFrame, failures: pd.DataFrame, cols: list[str], key: str | None) -> list[dict[str, Any]]:
    """Outlier images, the most extreme first: one entry per image (its most extreme measure), failed ones last."""
    found: dict[str, dict[str, Any]] = {}
    for col in cols:
        v = _num(summary[col])
        z = robust_z(v)
        med = v.median()
        for i in np.flatnonzero((z.abs() > OUTLIER_MADS).to_numpy()):
            image, zi = str(summary["image"].iat[i]), float(z.iat[i])
            if image not in found or abs(zi) > abs(found[image]["z"]):
                found[image] = {"image": image, "measure": col, "value": _r(v.iat[i]), "median": _r(med),
                                "z": round(zi, 1), "why": f"{abs(zi):.1f} robust SDs {'above' if zi > 0 else 'below'} "
                                                         f"the median ({_r(med)})"}
    if key is not None:
        v = _num(summary[key])
        if v.median() > 0:
            for i in np.flatnonzero((v == 0).to_numpy()):
                image = str(summary["image"].iat[i])
                found[image] = {"image": image, "measure": key, "value": 0.0, "median": _r(v.median()), "z": None,
                                "why": f"no {key} where the median image has {_r(v.median())}"}
    ranked = sorted(found.values(), key=lambda o: -(abs(o["z"]) if o["z"] is not None else math.inf))
    for row in failures.itertuples(index=False):
        ranked.append({"image": str(row.image), "measure": None, "value": None, "median": None, "z": None,
                       "why": f"{row.status}: {row.error}"})
    return ranked


def _images(df: pd.DataFrame, mask: pd.Series, n: int = 5) -> list[str]:
    return [str(i) for i in df.loc[mask, "image"].head(n)]


def sanity(summary: pd.DataFrame, objects: pd.DataFrame | None, key: str | None) -> list[dict[str, Any]]:
    """Run-level segmentation warnings computed from the results; each ``{"check", "says", "images"}``."""
    said: list[dict[str, Any]] = []
    n = len(summary)
    if objects is not None and len(objects) and "Area" in objects.columns:
        area = _num(objects["Area"])
        typical = area.median()
        if typical > 0:
            small = area < typical / 5
            share = small.groupby(objects["image"]).mean()
            hit = share[share > 0.3].sort_values(ascending=False)
            if float(small.mean()) > 0.2 or len(hit):
                said.append({"check": "fragmenting", "images": [str(i) for i in hit.index[:5]],
                             "says": f"{small.mean():.0%} of the objects are under a fifth of the typical object's "
                                     f"area ({typical:.4g}); in {len(hit)} image(s) most are: the segmentation may be "
                                     "breaking objects into pieces (textured nuclei?)"})
    if objects is not None and len(objects) and "Mean" in objects.columns and key is not None:
        mean = _num(objects["Mean"])
        by_image = mean.groupby(objects["image"])
        ratio = (by_image.max() / by_image.median()).replace([np.inf], np.nan)
        counts = _num(summary.set_index("image")[key])
        low = counts < 0.5 * counts.median()
        steered = ratio[(ratio > 4) & low.reindex(ratio.index, fill_value=False)].sort_values(ascending=False)
        if len(steered):
            said.append({"check": "debris", "images": [str(i) for i in steered.index[:5]],
                         "says": f"{len(steered)} image(s) have a few objects over 4x brighter than their others and "
                                 f"under half the median {key}: bright debris or mitoses may be steering the "
                                 "threshold, so that ordinary objects are missed"})
    if key is not None and n:
        v = _num(summary[key])
        zeros = v == 0
        if zeros.sum() >= max(2, 0.1 * n):
            said.append({"check": "empty", "images": _images(summary, zeros),
                         "says": f"{int(zeros.sum())} of {n} images ({zeros.mean():.0%}) have {key} 0"})
        split = bimodal(v[v != 0].dropna().to_numpy(float))   # empty images are the check above
        if split is not None:
            lo, hi, cut = split
            said.append({"check": "bimodal", "images": _images(summary, v > cut),
                         "says": f"{key} falls in two groups (medians {lo:.4g} and {hi:.4g}, split at {cut:.4g}): "
                                 "two conditions, or a segmentation that works on some images only"})
    for col in [c for c in summary.columns if str(c).startswith("qc_") and c not in BOOKKEEPING]:
        v = _num(summary[col])   # a macro's own self-check, e.g. qc_small_fraction (docs/lab-macros.md)
        z = robust_z(v.fillna(v.median()))
        flagged = z > OUTLIER_MADS
        if flagged.any():
            said.append({"check": col, "images": _images(summary, flagged),
                         "says": f"{int(flagged.sum())} image(s) have an unusual {col} (the macro's own self-check)"})
    return said


def bimodal(v: np.ndarray, min_n: int = 20) -> tuple[float, float, float] | None:
    """Two groups: a two-Gaussian mixture (EM from the Otsu split) that beats one Gaussian by BIC (by more than
    10), each group at least 10 % of the values and well apart (Ashman's D > 2). Otsu's halves alone are not
    enough: any one normal sample splits into halves with D ~ 2.7. Returns (median low, median high, split)."""
    if len(v) < min_n or np.ptp(v) == 0:
        return None
    s = np.sort(v)
    n = len(s)
    total = s.sum()
    left = np.cumsum(s)[:-1]
    k = np.arange(1, n)
    between = (left / k - (total - left) / (n - k)) ** 2 * k * (n - k)
    at = int(np.argmax(between)) + 1
    w, mu, var = np.array([at / n, 1 - at / n]), np.array([s[:at].mean(), s[at:].mean()]), np.array(
        [s[:at].var(), s[at:].var()]) + 1e-9 + 1e-6 * s.var()
    for _ in range(100):
        dens = w / np.sqrt(2 * np.pi * var) * np.exp(-(s[:, None] - mu) ** 2 / (2 * var))
        resp = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        w = resp.mean(axis=0)
        mu = (resp * s[:, None]).sum(axis=0) / np.maximum(resp.sum(axis=0), 1e-12)
        var = (resp * (s[:, None] - mu) ** 2).sum(axis=0) / np.maximum(resp.sum(axis=0), 1e-12) + 1e-6 * s.var()
    ll2 = np.log(np.maximum((w / np.sqrt(2 * np.pi * var) * np.exp(-(s[:, None] - mu) ** 2 / (2 * var))).sum(axis=1),
                            1e-300)).sum()
    ll1 = -0.5 * n * (np.log(2 * np.pi * s.var()) + 1)
    bic1, bic2 = 2 * np.log(n) - 2 * ll1, 5 * np.log(n) - 2 * ll2
    d = math.sqrt(2) * abs(mu[0] - mu[1]) / math.sqrt(var[0] + var[1])
    if bic2 > bic1 - 10 or w.min() < 0.1 or d <= 2:
        return None
    lo, hi = np.argsort(mu)
    cut = float((mu[lo] + mu[hi]) / 2)
    return float(np.median(s[s <= cut])), float(np.median(s[s > cut])), cut


def load(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.read_csv(run_dir / "summary.csv") if (run_dir / "summary.csv").is_file() else pd.DataFrame()
    failures = (pd.read_csv(run_dir / "failures.csv", dtype=str, keep_default_na=False)
                if (run_dir / "failures.csv").is_file() else pd.DataFrame(columns=["image", "status", "error"]))
    if "image" in summary.columns:   # names as written (the CSV's are spreadsheet-safe: sciops.reporting.cells)
        summary["image"] = summary["image"].astype(str).map(plain)
    if "image" in failures.columns:
        failures["image"] = failures["image"].map(plain)
    return summary, failures


def objects_of(run_dir: Path) -> pd.DataFrame | None:
    """The per-object columns the checks use (image, Area, Mean), from results.parquet."""
    path = run_dir / "results.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    cols = [c for c in ("image", "Area", "Mean") if c in names]
    return pq.read_table(path, columns=cols).to_pandas() if "image" in cols and len(cols) > 1 else None


def analyse(run_dir: Path | str) -> dict[str, Any] | None:
    """The ``results`` section of run.json (see the module docstring); None before collation."""
    run_dir = Path(run_dir)
    summary, failures = load(run_dir)
    if "image" not in summary.columns:
        return None
    cols = measures_of(summary)
    key = key_measure(cols)
    found = outliers(summary, failures, cols, key)
    qc = summary["qc_overlay"].fillna("").astype(str) if "qc_overlay" in summary.columns else pd.Series(dtype=str)
    return {
        "images": int(len(summary)), "failed": int(len(failures)), "key": key,
        "measures": {c: stats(_num(summary[c])) for c in cols},
        "outliers": found[:OUTLIERS_LISTED], "outliers_total": len(found),
        "warnings": sanity(summary, objects_of(run_dir), key),
        "overlays": int((qc != "").sum()),
        "plate": plate_mod.plate_of(summary, key) if key else None,
    }
