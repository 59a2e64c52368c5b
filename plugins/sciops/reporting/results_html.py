"""The "Results" part of report.html: warnings, a histogram per measure, outliers, the gallery, the plate.

Bounded at any run size (bench/bench_qc.py measures it at 100,000 images): the histograms bin,
the tables show the first :data:`ROWS` outliers and the top and bottom :data:`ROWS` images by the key
measure (summary.csv and results.parquet hold every image), and the gallery inlines at most
:data:`GALLERY_OUTLIERS` + :data:`GALLERY_TYPICAL` overlays (each ~20-45 KB as base64, so the page
stays under ~2 MB); the others stay files beside the report (``qc_overlay`` in summary.csv).
"""
from __future__ import annotations

import base64
import html
import random
from pathlib import Path
from typing import Any

import pandas as pd

from sciops.reporting import charts
from sciops.reporting.plate import heatmap_svg

ROWS = 25
GALLERY_OUTLIERS = 24
GALLERY_TYPICAL = 12
#: An overlay larger than this is linked, not inlined (a lab macro's own qc.png may be big).
INLINE_MAX_BYTES = 200_000


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def warnings_html(results: dict[str, Any] | None) -> str:
    """The sanity warnings, shown at the top of the report."""
    if not results or not results.get("warnings"):
        return ""
    items = "".join(f'<li data-check="{_e(w["check"])}"><b>{_e(w["check"])}</b>: {_e(w["says"])}'
                    f'{" (e.g. " + _e(", ".join(w["images"][:3])) + ")" if w.get("images") else ""}</li>'
                    for w in results["warnings"])
    return f'<div class="warnings" id="qc-warnings"><b>Check the results:</b><ul>{items}</ul></div>'


def _overlay(run_dir: Path, path: str) -> tuple[str, str] | None:
    """(src, href) of an overlay: a data URI when small enough, else the relative link only."""
    if not path:
        return None
    file = run_dir / path
    try:
        if not file.resolve().is_relative_to(run_dir.resolve()):
            return None
        size = file.stat().st_size
    except OSError:
        return None
    href = "/".join(_e(p) for p in Path(path).parts)
    if size > INLINE_MAX_BYTES:
        return href, href
    return "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode(), href


def _card(run_dir: Path, row: dict[str, Any], label: str, cls: str) -> str:
    shown = _overlay(run_dir, str(row.get("qc_overlay") or ""))
    if shown and row.get("qc_drawn") == "plain":
        label += " · no outlines: the macro left no ROIs and no X/Y"
    name = _e(row["image"])
    if shown is None:
        body = f'<div class="noqc">no overlay{_e(": " + row["nooverlay"]) if row.get("nooverlay") else ""}</div>'
    else:
        body = (f'<a href="{shown[1]}" class="enlarge"><img loading="lazy" alt="overlay of {name}" '
                f'src="{shown[0]}"></a>')
    return (f'<figure class="qc {cls}" data-image="{name}" data-overlay="{"yes" if shown else "no"}">{body}'
            f'<figcaption><b>{name}</b><br>{_e(label)}</figcaption></figure>')


def gallery_html(run_dir: Path, summary: pd.DataFrame, results: dict[str, Any]) -> str:
    key = results.get("key")
    by_image = summary.set_index("image", drop=False) if len(summary) else summary
    cards, shown = [], set()
    for o in results.get("outliers", []):
        if len(shown) >= GALLERY_OUTLIERS:
            break
        if o["image"] in by_image.index:
            row = by_image.loc[o["image"]]
            row = (row.iloc[0] if isinstance(row, pd.DataFrame) else row).to_dict()
            row["nooverlay"] = "" if row.get("qc_overlay") else "not in the qc_images sample"
        else:   # a failed image: listed with its reason, never an overlay
            row = {"image": o["image"], "nooverlay": "the image failed"}
        shown.add(o["image"])
        cards.append(_card(run_dir, row, o["why"] if o["measure"] is None else
                           f"{o['measure']} {o['value']}: {o['why']}", "outlier"))
    for w in results.get("warnings", []):   # the images a sanity warning names
        for image in w.get("images", [])[:4]:
            if image in shown or image not in by_image.index:
                continue
            shown.add(image)
            row = by_image.loc[image]
            row = (row.iloc[0] if isinstance(row, pd.DataFrame) else row).to_dict()
            row["nooverlay"] = "" if row.get("qc_overlay") else "not in the qc_images sample"
            cards.append(_card(run_dir, row, f"{w['check']}: {key} {row.get(key)}" if key else w["check"], "flagged"))
    typical = summary[~summary["image"].isin(shown)] if len(summary) else summary
    if "qc_overlay" in typical.columns:
        typical = typical[typical["qc_overlay"].fillna("").astype(str) != ""]
    pick = sorted(random.Random(0).sample(range(len(typical)), min(GALLERY_TYPICAL, len(typical))))
    for i in pick:
        row = typical.iloc[i].to_dict()
        cards.append(_card(run_dir, row, f"{key} {row.get(key)}" if key else "", "typical"))
    if not cards:
        return '<p class="empty">No overlays: the run drew none (qc_images: none, or no image finished).</p>'
    plain = int((summary.get("qc_drawn", pd.Series(dtype=str)).fillna("") == "plain").sum()) if len(summary) else 0
    said = (f'<p class="empty" id="qc-plain">{plain} overlay(s) show the image without outlines: the macro left no '
            'ROIs in the ROI Manager and no X/Y columns in its Results (docs/lab-macros.md, "What the report '
            'draws").</p>' if plain else "")
    return (said + '<p class="empty">Outliers first, then the images a warning names, then a random sample of typical images; click one to enlarge. '
            'Every overlay drawn is beside this report (summary.csv, column qc_overlay).</p>'
            f'<div class="gallery" id="gallery">{"".join(cards)}</div>')


def _rows_table(rows: list[dict[str, Any]], cols: list[str], cls: str) -> str:
    if not rows:
        return f'<p class="empty {cls}">None.</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e('' if r.get(c) is None else r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(run_dir: Path, results: dict[str, Any] | None) -> str:
    """The whole Results section (empty-handed runs say why)."""
    from sciops.reporting.results import load

    if not results:
        return '<h2 id="results">Results</h2><p class="empty">No results: the run collated nothing.</p>'
    summary, _ = load(run_dir)
    key, measures = results.get("key"), results.get("measures") or {}
    parts = ['<h2 id="results">Results</h2>']
    if not measures:
        parts.append('<p class="empty">The macro wrote no numeric summary column.</p>')
    for i, (col, st) in enumerate(measures.items()):
        if not st.get("n"):
            continue
        values = pd.to_numeric(summary[col], errors="coerce").dropna().tolist()
        parts.append(f'<h3>{_e(col)}{" (key measure)" if col == key else ""}</h3>'
                     f'<p class="stats" data-measure="{_e(col)}">median {_e(st["median"])} · IQR {_e(st["q1"])}–'
                     f'{_e(st["q3"])} · min {_e(st["min"])} · max {_e(st["max"])} · images {_e(st["n"])}'
                     f'{" · zeros " + _e(st["zeros"]) if st.get("zeros") else ""}</p>')
        parts.append(charts.histogram(values, f"measure-{i}", width=860, height=200, xlabel=str(col),
                                      spread=(st["q1"], st["median"], st["q3"])))
    plate = results.get("plate")
    if plate:
        marked = ", ".join(plate["outlier_wells"]) or "none"
        parts.append(f'<h3>Plate ({plate["format"]} wells): median {_e(plate["measure"])} per well</h3>'
                     f'<p class="empty">Outlier wells (red): {_e(marked)}. Hover a well for its value.</p>'
                     + heatmap_svg(plate))
    total = results.get("outliers_total", 0)
    parts.append(f'<h3>Outliers ({total})</h3>')
    parts.append(_rows_table(results.get("outliers", [])[:ROWS], ["image", "measure", "value", "median", "why"],
                             "outliers"))
    if total > ROWS:
        parts.append(f'<p class="more outliers">… and {total - ROWS} more in run.json (results.outliers).</p>')
    parts.append("<h3>Overlays</h3>" + gallery_html(run_dir, summary, results))
    if key and len(summary):
        ordered = summary.assign(_v=pd.to_numeric(summary[key], errors="coerce")).sort_values("_v", kind="stable")
        cols = ["image", *[c for c in measures if c in summary.columns]]
        for title, part in (("highest", ordered.tail(ROWS).iloc[::-1]), ("lowest", ordered.head(ROWS))):
            parts.append(f'<h3>The {ROWS if len(summary) > ROWS else len(summary)} images with the {title} {_e(key)}'
                         f'</h3>' + _rows_table(part[cols].to_dict("records"), cols, f"images-{title}"))
        parts.append(f'<p class="empty">All {len(summary)} images: summary.csv (one row each), results.parquet '
                     '(one row per object).</p>')
    return "".join(parts)


STYLE = """
.warnings { background: #fff4e5; border: 1px solid #f0a030; padding: 6px 12px; margin: 12px 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
figure.qc { margin: 0; width: 180px; font-size: 11px; word-break: break-all; }
figure.qc img { width: 180px; height: auto; cursor: zoom-in; border: 2px solid #ddd; }
figure.qc.outlier img { border-color: #d62728; }
figure.qc.flagged img { border-color: #f0a030; }
.noqc { width: 176px; height: 120px; border: 2px dashed #ccc; color: #777; display: flex; align-items: center;
        justify-content: center; text-align: center; }
#lightbox { display: none; position: fixed; inset: 0; background: rgba(0,0,0,.8); align-items: center;
            justify-content: center; z-index: 10; cursor: zoom-out; }
#lightbox img { max-width: 95vw; max-height: 95vh; image-rendering: pixelated; }
"""

SCRIPT = """
var box = document.getElementById("lightbox");
document.querySelectorAll("a.enlarge").forEach(function (a) {
  a.addEventListener("click", function (ev) {
    ev.preventDefault();
    box.querySelector("img").src = a.querySelector("img").src;
    box.style.display = "flex";
  });
});
if (box) box.addEventListener("click", function () { box.style.display = "none"; });
"""
