"""The SciOps Airflow plugin: runs dashboard, what-if planner, per-run reports.

Served by Airflow's API server under ``/sciops`` (a FastAPI app), every route behind
Airflow's own authentication (a JWT from ``/auth/token`` or the UI's session cookie):

- ``/sciops/dashboard``                 cost and duration per run over time, cost per image by
                                        macro, filter by project, and the planner form
- ``/sciops/api/runs``                  ledger rows (``?project=``, ``?limit=``)
- ``/sciops/api/summary``               what the dashboard draws (``?project=``)
- ``/sciops/api/planner``               N nodes of type X → duration and cost, from past runs
- ``/sciops/runs/{dag_id}/{run_id}/report``  the run's ``report.html``

The UI gets a "SciOps runs" navigation entry, a "Report" tab on DAG runs and a
"SciOps report" extra link on tasks. The library (``plugins/sciops/``) is excluded from
Airflow's plugin loader (``plugins/.airflowignore``); this file is the only plugin module.
"""
from __future__ import annotations

import html
import json
import statistics
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

from airflow.plugins_manager import AirflowPlugin

try:  # the link class moved between Airflow 3 releases
    from airflow.sdk import BaseOperatorLink
except ImportError:  # pragma: no cover
    from airflow.models.baseoperatorlink import BaseOperatorLink


def _auth():
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return Depends(requires_authenticated())


app = FastAPI(title="SciOps", description="Runs, costs and the what-if planner", dependencies=[_auth()])


def _rows(project: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    from sciops import ledger

    out = []
    for r in ledger.rows(project=project or None, limit=limit):
        r = dict(r)
        for key in ("params", "phases", "cost"):
            r[key] = json.loads(r[key]) if r.get(key) else {}
        out.append(r)
    return out


@app.get("/api/runs")
def api_runs(project: str | None = None, limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
    return {"runs": _rows(project, limit)}


def summary(project: str | None = None) -> dict[str, Any]:
    rows = _rows(project)
    per_run = [{k: r.get(k) for k in ("run_id", "airflow_run_id", "project", "macro", "status", "started_at",
                                      "duration_s", "cost_usd", "cost_per_image_usd", "images_ok", "images_total",
                                      "node_hours", "backend")} for r in sorted(rows, key=lambda r: r["started_at"] or 0)]
    by_macro: dict[str, list[float]] = {}
    for r in rows:
        if r.get("cost_per_image_usd") is not None:
            by_macro.setdefault(r["macro"] or "?", []).append(r["cost_per_image_usd"])
    return {"project": project, "runs": len(rows), "per_run": per_run,
            "cost_per_image_by_macro": {m: {"median_usd": statistics.median(v), "runs": len(v)}
                                        for m, v in sorted(by_macro.items())},
            "projects": sorted({r["project"] for r in rows if r.get("project")})}


@app.get("/api/summary")
def api_summary(project: str | None = None) -> dict[str, Any]:
    return summary(project)


@app.get("/api/planner")
def api_planner(macro: str = Query(..., description="macro name or sha256"), images: int = Query(..., ge=1),
                nodes: int = Query(1, ge=1, le=10000), instance_type: str | None = None,
                backend: str = Query("parallelcluster"), region: str = "us-east-1", memory_mb: int = 2048,
                hourly_rate_usd: float = 0.0, project: str | None = None) -> dict[str, Any]:
    """What N nodes of type X would take and cost for ``images`` images, from past runs of the macro."""
    from sciops import costs, ledger

    found = ledger.past_performance(macro_sha256=macro, project=project)
    if not found:
        raise HTTPException(404, f"no successful past run of macro {macro!r}: nothing to estimate from")
    try:
        est = costs.estimate(images, found["seconds_per_image"], backend=backend, nodes=nodes,
                             instance_type=instance_type, region=region, memory_mb=memory_mb,
                             hourly_rate_usd=hourly_rate_usd)
    except KeyError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"macro": macro, "images": images, "from_runs": found["runs"],
            "seconds_per_image": found["seconds_per_image"], "estimate": est}


@app.get("/runs/{dag_id}/{run_id}/report")
def run_report(dag_id: str, run_id: str):
    """The run's report.html: only a file the ledger recorded for that run is ever served."""
    from sciops.project import safe_run_id

    for r in _rows(limit=5000):
        if r["dag_id"] == dag_id and (run_id == r["airflow_run_id"] or safe_run_id(run_id) == r["run_id"]):
            if r.get("report"):
                try:
                    return FileResponse(r["report"], media_type="text/html")
                except (OSError, RuntimeError):
                    break
    raise HTTPException(404, f"no report recorded for {dag_id} run {run_id}")


def _line_chart(points: list[tuple[float, float]], label: str, element_id: str, unit: str) -> str:
    width, height, left, bottom = 860, 220, 60, 28
    if not points:
        return f'<p class="empty">No runs yet for {html.escape(label)}.</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y1 = max(ys) or 1
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - 10)  # noqa: E731
    sy = lambda y: 10 + (1 - y / y1) * (height - bottom - 10)  # noqa: E731
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"><title>{y:.4g} {unit}'
                   f'</title></circle>' for x, y in points)
    return (f'<svg id="{element_id}" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><text x="4" y="20" font-size="11">{y1:.4g} {unit}</text>'
            f'<path d="{path}" fill="none" stroke="#1f77b4"/>{dots}<text x="{left}" y="{height - 6}" '
            f'font-size="11">{html.escape(label)} (oldest → newest)</text></svg>')


@app.get("/dashboard", response_class=HTMLResponse)
def dashboard(project: str | None = None) -> str:
    s = summary(project)
    runs = [r for r in s["per_run"] if r["started_at"]]
    cost = _line_chart([(r["started_at"], r["cost_usd"] or 0.0) for r in runs], "cost per run", "cost-chart", "USD")
    dur = _line_chart([(r["started_at"], (r["duration_s"] or 0.0) / 60) for r in runs], "duration per run",
                      "duration-chart", "min")
    macros = "".join(f"<tr><td>{html.escape(m)}</td><td>{v['median_usd']:.5f}</td><td>{v['runs']}</td></tr>"
                     for m, v in s["cost_per_image_by_macro"].items())
    options = "".join(f'<option value="{html.escape(p)}"{" selected" if p == project else ""}>{html.escape(p)}'
                      f'</option>' for p in s["projects"])
    table = "".join(
        f"<tr><td>{html.escape(str(r['project']))}</td><td>{html.escape(str(r['run_id']))}</td>"
        f"<td>{html.escape(str(r['status']))}</td><td>{r['images_ok']}/{r['images_total']}</td>"
        f"<td>{(r['duration_s'] or 0) / 60:.1f}</td><td>{(r['cost_usd'] or 0):.4f}</td></tr>" for r in reversed(runs))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>SciOps runs</title>
<style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px}}.empty{{color:#777}}</style></head><body>
<h1>SciOps runs{' — ' + html.escape(project) if project else ''}</h1>
<form method="get"><label>Project <select name="project"><option value="">all</option>{options}</select></label>
<button>Filter</button></form>
<h2>Cost per run</h2>{cost}<h2>Duration per run</h2>{dur}
<h2>Cost per image by macro (median)</h2><table id="by-macro"><tr><th>macro</th><th>USD per image</th><th>runs</th></tr>
{macros}</table>
<h2>What if…</h2>
<form id="planner"><input name="macro" placeholder="macro (e.g. count_nuclei)" required>
<input name="images" type="number" min="1" placeholder="images" required>
<input name="nodes" type="number" min="1" value="4"> nodes of
<input name="instance_type" value="c5.xlarge"> in <input name="region" value="us-east-1">
<button>Estimate</button></form><pre id="planner-out"></pre>
<script>
document.getElementById("planner").addEventListener("submit", function (e) {{
  e.preventDefault();
  var q = new URLSearchParams(new FormData(e.target));
  fetch("api/planner?" + q, {{credentials: "same-origin"}}).then(function (r) {{ return r.json(); }})
    .then(function (j) {{ document.getElementById("planner-out").textContent = JSON.stringify(j, null, 1); }});
}});
</script>
<h2>Runs</h2><table id="runs"><tr><th>project</th><th>run</th><th>status</th><th>images ok</th><th>minutes</th>
<th>USD</th></tr>{table}</table></body></html>"""


class RunReportLink(BaseOperatorLink):
    """"SciOps report" on every task of a fiji_project run."""

    name = "SciOps report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != "fiji_project":
            return ""
        return f"/sciops/runs/{ti_key.dag_id}/{ti_key.run_id}/report"


class SciOpsPlugin(AirflowPlugin):
    name = "sciops"
    fastapi_apps = [{"app": app, "url_prefix": "/sciops", "name": "SciOps"}]
    external_views = [
        {"name": "SciOps runs", "href": "/sciops/dashboard", "destination": "nav", "url_route": "sciops-runs"},
        {"name": "Report", "href": "/sciops/runs/{DAG_ID}/{RUN_ID}/report", "destination": "dag_run",
         "url_route": "sciops-report"},
    ]
    global_operator_extra_links = [RunReportLink()]
