"""Plate views: well positions read from image names, a measure per well, a heatmap with outlier wells.

Names carry wells the ways plate readers and scanners write them: ``r02c05`` (Opera/Operetta,
1-based row and column), ``Well B05`` / ``well_B5`` / ``wellB05``, or a bare ``B05`` / ``B5``
between non-letters and non-digits (rows A-Z, then AA-AF on 1,536-well plates). A plate is shown when at least
:data:`PARSED_SHARE` of the images name a well; its format (96, 384 or 1,536) is the smallest that
holds every well named. Several images (fields) of a well count as one well: their median.

The heatmap is SVG written here, one ``<rect>`` per well with its own ``<title>`` (what the browser
shows on hover) and ``data-*`` attributes (what the browser test reads): matplotlib draws a plate as a
mesh or an image, with no per-well element to hover; its colour map (viridis) is used for the colours.
At 1,536 wells the SVG is ~0.2 MB.
"""
from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd

#: Plate formats: wells -> (rows, columns).
FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
#: A plate is shown when at least this share of the images name a well.
PARSED_SHARE = 0.8
#: A well whose median is this many robust SDs from the plate's median is an outlier well: 4.5, not the
#: images' 3.5, because a plate is many tests at once (3.5 marks ~0.7 of 1,536 normal wells by chance; 4.5, 0.01).
WELL_MADS = 4.5

_ROW = r"(A[A-F]|[A-Z])"
PATTERNS = (
    re.compile(r"(?<![A-Za-z0-9])r(\d{1,2})c(\d{1,2})(?!\d)", re.IGNORECASE),            # r02c05
    re.compile(r"well[ _-]?" + _ROW + r"[ _-]?0*(\d{1,2})(?!\d)", re.IGNORECASE),          # Well B05
    re.compile(r"(?<![A-Za-z0-9])" + _ROW + r"0*(\d{1,2})(?![0-9A-Za-z])"),                # B05_, _B5.
)


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 MAD); with MAD 0 (most values equal), the IQR's, else the mean deviation's scale."""
    v = values.astype(float)
    med = v.median()
    scale = 1.4826 * (v - med).abs().median()
    if not scale:
        scale = (v.quantile(0.75) - v.quantile(0.25)) / 1.349 or (v - med).abs().mean() * 1.2533
    if not scale or np.isnan(scale):
        return pd.Series(0.0, index=v.index)
    return (v - med) / scale


def row_number(letters: str) -> int:
    """A -> 1 ... P -> 16, AA -> 27 ... AF -> 32."""
    letters = letters.upper()
    return ord(letters) - 64 if len(letters) == 1 else 26 + ord(letters[1]) - 64


def row_name(n: int) -> str:
    return chr(64 + n) if n <= 26 else "A" + chr(64 + n - 26)


def well_of(name: str) -> tuple[int, int] | None:
    """(row, column), 1-based, of the well an image name carries; None if it names none."""
    stem = name.rsplit("/", 1)[-1]
    for i, pattern in enumerate(PATTERNS):
        m = None
        for m in pattern.finditer(stem):   # the last match: folders and prefixes come first
            pass
        if m:
            row = int(m.group(1)) if i == 0 else row_number(m.group(1))
            col = int(m.group(2))
            if row >= 1 and 1 <= col <= 48:
                return row, col
    return None


def plate_of(summary: pd.DataFrame, measure: str) -> dict[str, Any] | None:
    """The plate section of the results: format, measure, one entry per well; None when names carry no wells."""
    names = summary["image"].astype(str)
    wells = names.map(well_of)
    named = wells.notna()
    if not len(summary) or named.mean() < PARSED_SHARE:
        return None
    rows = max(w[0] for w in wells[named])
    cols = max(w[1] for w in wells[named])
    fmt = next((f for f, (r, c) in FORMATS.items() if rows <= r and cols <= c), None)
    if fmt is None:
        return None
    values = pd.to_numeric(summary.loc[named, measure], errors="coerce")
    key = wells[named].map(lambda w: f"{row_name(w[0])}{w[1]:02d}")
    per_well = values.groupby(key).agg(["median", "count"])
    z = robust_z(per_well["median"])
    out = {}
    for well, row in per_well.iterrows():
        out[well] = {"value": None if pd.isna(row["median"]) else float(f"{row['median']:.6g}"),
                     "fields": int(row["count"]), "outlier": bool(abs(z[well]) > WELL_MADS)}
    return {"format": fmt, "rows": FORMATS[fmt][0], "columns": FORMATS[fmt][1], "measure": measure,
            "wells": out, "outlier_wells": sorted(w for w, v in out.items() if v["outlier"])}


def heatmap_svg(plate: dict[str, Any], element_id: str = "plate") -> str:
    """The plate as an SVG grid: colour = the well's value (viridis), outlier wells outlined in red."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize, to_hex

    rows, cols = plate["rows"], plate["columns"]
    cell = max(8, min(40, 860 // (cols + 1)))
    values = [w["value"] for w in plate["wells"].values() if w["value"] is not None]
    norm = Normalize(min(values, default=0), max(values, default=1) if values and max(values) > min(values)
                     else min(values, default=0) + 1)
    cmap = colormaps["viridis"]
    width, height = (cols + 1) * cell + 90, (rows + 1) * cell + 10
    font = max(7, cell // 3)
    parts = [f'<svg id="{element_id}" class="chart plate" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" data-marks="{len(plate["wells"])}" role="img" '
             f'aria-label="{html.escape(plate["measure"])} per well">']
    step = max(1, cols // 24)
    for c in range(1, cols + 1, step):
        parts.append(f'<text x="{c * cell + cell / 2}" y="{cell * 0.7}" font-size="{font}" '
                     f'text-anchor="middle">{c}</text>')
    for r in range(1, rows + 1, max(1, rows // 16)):
        parts.append(f'<text x="{cell * 0.5}" y="{r * cell + cell * 0.65}" font-size="{font}" '
                     f'text-anchor="middle">{row_name(r)}</text>')
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            well = f"{row_name(r)}{c:02d}"
            w = plate["wells"].get(well)
            x, y = c * cell, r * cell
            if w is None:
                parts.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="#eee"/>')
                continue
            fill = "#ccc" if w["value"] is None else to_hex(cmap(norm(w["value"])))
            stroke = ' stroke="#d62728" stroke-width="3"' if w["outlier"] else ""
            label = f'{well}: {plate["measure"]} {w["value"]} ({w["fields"]} image(s)){" — outlier" if w["outlier"] else ""}'
            parts.append(f'<rect class="well{" outlier" if w["outlier"] else ""}" data-well="{well}" '
                         f'data-value="{w["value"]}" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{fill}"{stroke}><title>{html.escape(label)}</title></rect>')
    # the colour scale
    x0 = (cols + 1) * cell + 15
    for i in range(10):
        v = norm.vmin + (norm.vmax - norm.vmin) * (9 - i) / 9
        parts.append(f'<rect x="{x0}" y="{cell + i * (rows * cell / 10)}" width="14" '
                     f'height="{rows * cell / 10 + 0.5}" fill="{to_hex(cmap(norm(v)))}"/>')
    parts.append(f'<text x="{x0 + 18}" y="{cell + font}" font-size="{font}">{norm.vmax:.4g}</text>')
    parts.append(f'<text x="{x0 + 18}" y="{(rows + 1) * cell}" font-size="{font}">{norm.vmin:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)
