"""``report.html``: one self-contained page per run (no network, no external scripts or fonts).

Titled with Airflow's own run id (the run folder's name, which differs, under it). First what was
measured (:mod:`sciops.reporting.results_html`: sanity warnings, a histogram per measure, outliers, the
QC overlays' gallery, the plate), then the execution: a timeline of array tasks per node (from the
runners' own start/end records; a row per task running at once on a node, each labelled; past
``charts.TIMELINE_DETAIL_MAX`` attempts, tasks running per node and time bucket), a histogram of
per-image runtimes (``summary.csv``), one cost table (the items, then their totals), the phases in the
order they ran with the time between them (Airflow's), so that they add up to the run's wall time
(:func:`phase_account`), and the failures (the first ``TABLE_ROWS_MAX``; failures.csv has all).
Charts are inline SVG from :mod:`sciops.reporting.charts` (matplotlib); a few lines of inline
JavaScript record each chart's rendered size in ``data-rendered-*`` attributes (what the
headless-browser test reads).
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
from sciops.reporting.durations import duration


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


def cost_foot(cost: dict[str, Any], per_image: float | None) -> str:
    """The cost table's totals, under its items (one table: the items, then what they add up to)."""
    rows = [("compute", cost.get("compute_usd", 0.0)), ("storage", cost.get("storage_usd", 0.0)),
            ("total", cost.get("total_usd", 0.0)),
            ("per image (ok)", per_image if per_image is not None else "— (no image finished)")]
    return "".join(f'<tr class="{"total" if item == "total" else "sum"}"><th colspan="2" scope="row">{_e(item)}</th>'
                   f"<td>{_e(usd)}</td></tr>" for item, usd in rows)


#: What the run's time outside its phases is: Airflow's own work before the first task and from one to the next.
BETWEEN = "Airflow, outside the phases"
BETWEEN_WHAT = ("starting the DAG run, queueing and scheduling each task, starting its process, and the tasks "
                "with nothing to do (create_cluster and delete_cluster on a backend without a cluster)")


def phase_account(doc: dict[str, Any]) -> dict[str, Any]:
    """The run's wall time, accounted for: each phase (in the order they ran, when it started after the DAG run
    began, how long it took) and the time between them, which is Airflow's (:data:`BETWEEN_WHAT`).

    The wall time runs from the DAG run's start (``dag_run_started``; else the first phase's) to when ``record``
    began (``recorded_at``; else the last phase's end). Phases that ran at once (``stage_out`` beside
    ``delete_cluster``) count once in it (``overlap``: by how much they did). A phase that never started goes last.
    """
    phases = doc.get("phases") or {}
    timed = {k: v for k, v in phases.items() if v.get("start")}
    untimed = [{"phase": k, "started": "—", "took": "—", "status": v.get("status") or "—"}
               for k, v in phases.items() if not v.get("start")]
    if not timed:
        return {"rows": untimed, "gaps": [], "chart_rows": [], "wall": None, "between": None, "overlap": 0.0,
                "from_dag_run": False}
    first = min(v["start"] for v in timed.values())
    t0 = min(doc.get("dag_run_started") or first, first)
    spans = {k: (v["start"], max(v.get("end") or doc.get("recorded_at") or v["start"], v["start"]))
             for k, v in timed.items()}
    t1 = max([b for _, b in spans.values()] + [doc.get("recorded_at") or 0])
    gaps, cursor = [], t0
    for a, b in sorted(spans.values()):
        if a > cursor:
            gaps.append((cursor - t0, a - cursor))
        cursor = max(cursor, b)
    if t1 > cursor:
        gaps.append((cursor - t0, t1 - cursor))
    between = sum(g for _, g in gaps)
    order = sorted(timed, key=lambda k: spans[k][0])
    rows = [{"phase": k, "started": f"after {duration(spans[k][0] - t0)}", "took": duration(spans[k][1] - spans[k][0]),
             "status": timed[k].get("status") or "—"} for k in order]
    return {"rows": rows + untimed, "gaps": gaps, "wall": t1 - t0, "between": between,
            "overlap": sum(b - a for a, b in spans.values()) - (t1 - t0 - between),
            "from_dag_run": bool(doc.get("dag_run_started")),
            "chart_rows": [(k, spans[k][0] - t0, spans[k][1] - spans[k][0], timed[k].get("status") == "failed")
                           for k in order]}


def phases_html(doc: dict[str, Any]) -> str:
    """The phases' chart and table, ending in the wall time they and Airflow's time between them add up to."""
    acc = phase_account(doc)
    cols = ["phase", "started", "took", "status"]
    if acc["wall"] is None:
        return _table(acc["rows"], cols, "phases")
    start = "Airflow's DAG run started" if acc["from_dag_run"] else "the first phase started"
    foot = (f'<tr class="between"><th colspan="2" scope="row">{_e(BETWEEN)} (grey above)</th>'
            f'<td colspan="2">{_e(duration(acc["between"]))}</td></tr>'
            f'<tr class="total"><th colspan="2" scope="row">wall time, from when {_e(start)} to this report</th>'
            f'<td colspan="2">{_e(duration(acc["wall"]))}</td></tr>')
    overlap = (f'<p class="empty" id="phases-overlap">Phases that ran at the same time overlap by '
               f'{_e(duration(acc["overlap"]))}: the wall time counts that once.</p>' if acc["overlap"] >= 0.05 else "")
    return (charts.phases(acc["chart_rows"], acc["gaps"], BETWEEN) + _table(acc["rows"], cols, "phases", foot=foot)
            + overlap + f'<p class="empty" id="phases-between">{_e(BETWEEN)}: {_e(BETWEEN_WHAT)}. After this report, '
                        '<code>record</code> writes the ledger and the copies and <code>outcome</code> ends the DAG '
                        'run: Airflow\'s duration of the run includes them.</p>')


#: Rows of a table the page shows; the rest are in the CSV it names.
TABLE_ROWS_MAX = 200


def _table(rows: list[dict[str, Any]], cols: list[str], cls: str, rest_in: str = "", foot: str = "") -> str:
    """``rows`` as a table (the first :data:`TABLE_ROWS_MAX`; the rest named in ``rest_in``); ``foot``: rows of
    markup under them (totals)."""
    if not rows:
        return f'<p class="empty {cls}">None.</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows[:TABLE_ROWS_MAX])
    more = (f'<p class="more {cls}">… and {len(rows) - TABLE_ROWS_MAX} more in {_e(rest_in)}.</p>'
            if rest_in and len(rows) > TABLE_ROWS_MAX else "")
    foot = f"<tfoot>{foot}</tfoot>" if foot else ""
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table>{more}'


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
    images = doc.get("images") or {}
    title = f"SciOps run {doc.get('airflow_run_id') or doc.get('run_id')} — {doc.get('project')}"   # Airflow's id
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: Inter, -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; max-width: 960px; }}   /* Airflow's UI's fonts: the report is its Report tab too */
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
.status-success {{ color: #2ca02c; }} .status-failed, .status-budget {{ color: #d62728; }}
.empty {{ color: #777; }}
tfoot th {{ text-align: left; font-weight: normal; }} tfoot tr.total th, tfoot tr.total td {{ font-weight: bold; }}
tfoot tr:first-child th, tfoot tr:first-child td {{ border-top: 2px solid #888; }}
{results_html.STYLE}
</style></head><body>
<div id="lightbox"><img alt="enlarged overlay"></div>
<h1>{_e(title)}</h1>
<p class="empty" id="run-folder">Its files: <code>{_e(doc.get('project'))}/output/{_e(doc.get('run_id'))}/</code></p>
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
{_table(items or [{"item": "no node-hours recorded", "node-hours": 0, "USD": 0}], ["item", "node-hours", "USD"], "cost",
        foot=cost_foot(cost, doc.get("cost_per_image_usd")))}
<p class="empty">Prices: {_e(cost.get('prices_as_of') or cost.get('kind', ''))}{_e(' · rate ' + str(cost.get('hourly_rate_usd')) + ' USD/task-hour' if cost.get('kind') == 'hourly_rate' else '')}</p>
<h2>Phases</h2>
{phases_html(doc)}
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
