"""``report.html``: one self-contained page per run (no network, no external scripts or fonts).

A timeline of array tasks per node (from the runners' own start/end records), a histogram
of per-image runtimes (``summary.csv``), the cost breakdown and the failures. Charts are
inline SVG drawn here; a few lines of inline JavaScript record each chart's rendered size
in ``data-rendered-*`` attributes (what the headless-browser test reads).
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from sciops.costs import task_intervals

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def timeline_svg(tasks: list[dict[str, Any]], width: int = 900) -> str:
    if not tasks:
        return '<p class="empty">No array task recorded a start and an end.</p>'
    t0 = min(t["start"] for t in tasks)
    span = max(max(t["end"] for t in tasks) - t0, 1e-6)
    hosts = sorted({t["host"] or "?" for t in tasks})
    rows: dict[str, list[list[dict]]] = {h: [] for h in hosts}  # lanes per host, so overlaps stay visible
    for t in sorted(tasks, key=lambda t: t["start"]):
        lanes = rows[t["host"] or "?"]
        for lane in lanes:
            if lane[-1]["end"] <= t["start"]:
                lane.append(t)
                break
        else:
            lanes.append([t])
    left, lane_h, top = 140, 18, 24
    n_lanes = sum(max(len(v), 1) for v in rows.values())
    height = top + n_lanes * lane_h + 30
    plot_w = width - left - 20
    parts = [f'<svg id="timeline" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Array tasks per node">']
    y = top
    for host in hosts:
        lanes = rows[host] or [[]]
        parts.append(f'<text x="4" y="{y + 13}" font-size="12">{_e(host)[:20]}</text>')
        for lane in lanes:
            for t in lane:
                x = left + (t["start"] - t0) / span * plot_w
                w = max((t["end"] - t["start"]) / span * plot_w, 1.5)
                color = PALETTE[((t["attempt"] or 1) - 1) % len(PALETTE)] if t.get("exit") == 0 else "#d62728"
                parts.append(f'<rect class="task" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{lane_h - 4}" '
                             f'fill="{color}"><title>task {t["task"]} attempt {t["attempt"]} on {_e(host)}: '
                             f'{t["end"] - t["start"]:.1f} s, exit {t.get("exit")}</title></rect>')
            y += lane_h
    for i in range(6):
        x = left + plot_w * i / 5
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{x:.1f}" y="{y + 16}" font-size="11" text-anchor="middle">{span * i / 5:.0f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(seconds: list[float], width: int = 900, height: int = 260, bins: int = 20) -> str:
    if not seconds:
        return '<p class="empty">No image finished.</p>'
    lo, hi = min(seconds), max(seconds)
    if hi - lo < 1e-9:
        hi = lo + 1
    counts = [0] * bins
    for s in seconds:
        counts[min(int((s - lo) / (hi - lo) * bins), bins - 1)] += 1
    left, bottom, top = 50, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(counts)
    parts = [f'<svg id="histogram" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Seconds per image">']
    bw = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        parts.append(f'<rect class="bar" x="{left + i * bw + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bw - 2:.1f}" '
                     f'height="{h:.1f}" fill="#1f77b4"><title>{lo + i * (hi - lo) / bins:.2f}–'
                     f'{lo + (i + 1) * (hi - lo) / bins:.2f} s: {c} image(s)</title></rect>')
    for i in range(5):
        x = left + plot_w * i / 4
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="11" text-anchor="middle">'
                     f'{lo + (hi - lo) * i / 4:.2f} s</text>')
    parts.append(f'<text x="4" y="{top + 10}" font-size="11">{peak}</text></svg>')
    return "".join(parts)


def _table(rows: list[dict[str, Any]], cols: list[str], cls: str) -> str:
    if not rows:
        return f'<p class="empty {cls}">None.</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(run_dir: Path | str, doc: dict[str, Any]) -> str:
    import pandas as pd

    run_dir = Path(run_dir)
    tasks = task_intervals(run_dir / "work")
    seconds: list[float] = []
    failures: list[dict[str, Any]] = []
    if (run_dir / "summary.csv").exists():
        df = pd.read_csv(run_dir / "summary.csv")
        if "seconds" in df.columns:
            seconds = [float(s) for s in df["seconds"].dropna()]
    if (run_dir / "failures.csv").exists():
        failures = pd.read_csv(run_dir / "failures.csv").fillna("").to_dict("records")
    cost = doc.get("cost") or {}
    cost_rows = [{"item": k, "node-hours": round(v, 4)} for k, v in (cost.get("node_hours") or {}).items()]
    by_type = cost.get("by_instance_type") or {}
    for r in cost_rows:
        r["USD"] = round(by_type.get(r["item"], {}).get("usd", 0.0), 4) if by_type else ""
    totals = [{"item": "compute", "USD": cost.get("compute_usd")}, {"item": "storage", "USD": cost.get("storage_usd")},
              {"item": "total", "USD": cost.get("total_usd")},
              {"item": "per image (ok)", "USD": doc.get("cost_per_image_usd")}]
    phases = [{"phase": k, "seconds": v.get("seconds"), "status": v.get("status")}
              for k, v in (doc.get("phases") or {}).items()]
    images = doc.get("images") or {}
    title = f"SciOps run {doc.get('run_id')} — {doc.get('project')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 960px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
.status-success {{ color: #2ca02c; }} .status-failed, .status-budget {{ color: #d62728; }}
.empty {{ color: #777; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p class="status-{_e(str(doc.get('status')).split()[0])}">Status: <b>{_e(doc.get('status'))}</b>
 · images ok {_e(images.get('ok'))} / failed {_e(images.get('failed'))} / total {_e(images.get('total'))}
 · macro {_e((doc.get('macro') or {}).get('name'))} · backend {_e((doc.get('params') or {}).get('backend'))}
 · cost {_e(cost.get('total_usd'))} USD</p>
<h2>Array tasks per node</h2>
{timeline_svg(tasks)}
<h2>Seconds per image</h2>
{histogram_svg(seconds)}
<h2>Cost</h2>
{_table(cost_rows, ["item", "node-hours", "USD"], "cost")}
{_table(totals, ["item", "USD"], "cost-totals")}
<p class="empty">Prices: {_e(cost.get('prices_as_of') or cost.get('kind', ''))}{_e(' · rate ' + str(cost.get('hourly_rate_usd')) + ' USD/task-hour' if cost.get('kind') == 'hourly_rate' else '')}</p>
<h2>Phases</h2>
{_table(phases, ["phase", "seconds", "status"], "phases")}
<h2>Failures</h2>
{_table(failures, ["image", "task", "attempt", "status", "error"], "failures")}
<script>
document.querySelectorAll("svg.chart").forEach(function (svg) {{
  var box = svg.getBoundingClientRect();
  svg.setAttribute("data-rendered-width", Math.round(box.width));
  svg.setAttribute("data-rendered-height", Math.round(box.height));
  svg.setAttribute("data-rendered-marks", svg.querySelectorAll("rect").length);
}});
document.body.setAttribute("data-rendered", "yes");
</script>
<script type="application/json" id="run-json">{_e(json.dumps({k: doc.get(k) for k in ('run_id', 'status', 'images')}))}</script>
</body></html>
"""


def write(run_dir: Path | str, doc: dict[str, Any]) -> Path:
    path = Path(run_dir, "report.html")
    path.write_text(render(run_dir, doc), encoding="utf-8")
    return path
