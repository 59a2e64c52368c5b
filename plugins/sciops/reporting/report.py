"""``report.html``: one self-contained page per run (no network, no external scripts or fonts).

First what was measured (:mod:`sciops.reporting.results_html`: sanity warnings, a histogram per
measure, outliers, the QC overlays' gallery, the plate), then the execution:
A timeline of array tasks per node (from the runners' own start/end records; past
``charts.TIMELINE_DETAIL_MAX`` attempts, tasks running per node and time bucket), a histogram
of per-image runtimes (``summary.csv``), the cost breakdown, the phases in the order they
ran and the failures (the first ``TABLE_ROWS_MAX``; failures.csv has all). Charts are inline SVG from :mod:`sciops.reporting.charts` (matplotlib); a few lines of inline JavaScript record each chart's rendered size
in ``data-rendered-*`` attributes (what the headless-browser test reads).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from sciops.accounting.costs import task_intervals
from sciops.reporting import charts
from sciops.reporting import results_html
from sciops.reporting.cells import plain


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _script_json(data: Any) -> str:
    """JSON that stays valid inside ``<script>``: not HTML-escaped (that breaks it), but ``<``, ``>``, ``&`` as \\u."""
    return json.dumps(data, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def timeline_svg(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return '<p class="empty">No array task recorded a start and an end.</p>'
    if len(tasks) > charts.TIMELINE_DETAIL_MAX:
        return charts.timeline_heatmap(tasks)
    return charts.timeline(tasks)


def histogram_svg(seconds: list[float]) -> str:
    if not seconds:
        return '<p class="empty">No image finished.</p>'
    return charts.histogram(seconds)


def cost_rows(cost: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per priced item, each with its USD (an hourly rate prices task-hours; EC2 per instance type)."""
    by_type = cost.get("by_instance_type") or {}
    rate = cost.get("hourly_rate_usd") or 0.0
    rows = []
    for item, hours in (cost.get("node_hours") or {}).items():
        usd = by_type[item].get("usd", 0.0) if item in by_type else hours * rate
        rows.append({"item": item, "node-hours": round(hours, 4), "USD": round(usd, 4)})
    return rows


def phase_rows(phases: dict[str, Any]) -> list[dict[str, Any]]:
    """Phases in the order they ran (by start; a phase that never started goes last)."""
    ordered = sorted(phases.items(), key=lambda kv: (kv[1].get("start") is None, kv[1].get("start") or 0))
    return [{"phase": k, "seconds": v.get("seconds") if v.get("seconds") is not None else "—",
             "status": v.get("status") or "—"} for k, v in ordered]


#: Rows of a table the page shows; the rest are in the CSV it names.
TABLE_ROWS_MAX = 200


def _table(rows: list[dict[str, Any]], cols: list[str], cls: str, rest_in: str = "") -> str:
    if not rows:
        return f'<p class="empty {cls}">None.</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows[:TABLE_ROWS_MAX])
    more = (f'<p class="more {cls}">… and {len(rows) - TABLE_ROWS_MAX} more in {_e(rest_in)}.</p>'
            if rest_in and len(rows) > TABLE_ROWS_MAX else "")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def render(run_dir: Path | str, doc: dict[str, Any]) -> str:
    import pandas as pd

    run_dir = Path(run_dir)
    tasks = task_intervals(run_dir / "work")
    seconds: list[float] = []
    failures: list[dict[str, Any]] = []
    if (run_dir / "summary.csv").exists():
        df = pd.read_csv(run_dir / "summary.csv", usecols=lambda c: c == "seconds")
        if "seconds" in df.columns:
            seconds = df["seconds"].dropna().astype(float).tolist()
    if (run_dir / "failures.csv").exists():
        failures = [{k: plain(v) for k, v in row.items()} for row in   # shown as written, not as escaped
                    pd.read_csv(run_dir / "failures.csv", dtype=str, keep_default_na=False).to_dict("records")]
    cost = doc.get("cost") or {}
    items = cost_rows(cost)
    per_image = doc.get("cost_per_image_usd")
    totals = [{"item": "compute", "USD": cost.get("compute_usd", 0.0)},
              {"item": "storage", "USD": cost.get("storage_usd", 0.0)}, {"item": "total", "USD": cost.get("total_usd", 0.0)},
              {"item": "per image (ok)", "USD": per_image if per_image is not None else "— (no image finished)"}]
    phases = phase_rows(doc.get("phases") or {})
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
{results_html.STYLE}
</style></head><body>
<div id="lightbox"><img alt="enlarged overlay"></div>
<h1>{_e(title)}</h1>
<p class="status-{_e(str(doc.get('status')).split()[0])}">Status: <b>{_e(doc.get('status'))}</b>
 · images ok {_e(images.get('ok'))} / failed {_e(images.get('failed'))} / total {_e(images.get('total'))}
 · macro {_e((doc.get('macro') or {}).get('name'))} · backend {_e((doc.get('params') or {}).get('backend'))}
 · ImageJ {_e(doc.get('imagej_version'))}{_e(' + Bio-Formats ' + doc['bioformats_version'] if doc.get('bioformats_version') else '')}
 · cost {_e(cost.get('total_usd'))} USD</p>
{f'<p class="reason">Why: {_e(doc["reason"])}</p>' if doc.get("status") != "success" and doc.get("reason") else ""}
{results_html.warnings_html(doc.get("results"))}
{results_html.section(run_dir, doc.get("results"))}
<h2>Array tasks per node</h2>
{timeline_svg(tasks)}
<h2>Seconds per image</h2>
{histogram_svg(seconds)}
<h2>Cost</h2>
{_table(items, ["item", "node-hours", "USD"], "cost")}
{_table(totals, ["item", "USD"], "cost-totals")}
<p class="empty">Prices: {_e(cost.get('prices_as_of') or cost.get('kind', ''))}{_e(' · rate ' + str(cost.get('hourly_rate_usd')) + ' USD/task-hour' if cost.get('kind') == 'hourly_rate' else '')}</p>
<h2>Phases</h2>
{_table(phases, ["phase", "seconds", "status"], "phases")}
<h2>Failures</h2>
{_table(failures, ["image", *(c for c in ("file", "series", "channel") if failures and c in failures[0]),
                  "task", "attempt", "status", "error"], "failures", "failures.csv")}
<script>
document.querySelectorAll("svg.chart").forEach(function (svg) {{
  var box = svg.getBoundingClientRect();
  svg.setAttribute("data-rendered-width", Math.round(box.width));
  svg.setAttribute("data-rendered-height", Math.round(box.height));
  svg.setAttribute("data-rendered-marks", svg.getAttribute("data-marks"));
}});
{results_html.SCRIPT}
document.body.setAttribute("data-rendered", "yes");
</script>
<script type="application/json" id="run-json">{_script_json({k: doc.get(k) for k in ('run_id', 'status', 'images')} | {'warnings': (doc.get('results') or {}).get('warnings')})}</script>
</body></html>
"""


def write(run_dir: Path | str, doc: dict[str, Any]) -> Path:
    """``report.html``, atomically (:func:`sciops.run.project.write_atomic`: never half a page)."""
    from sciops.run.project import write_atomic

    return write_atomic(Path(run_dir, "report.html"), render(run_dir, doc))
