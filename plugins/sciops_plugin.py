"""The SciOps Airflow plugin: runs dashboard, what-if planner, per-run reports.

Served by Airflow's API server under ``/sciops`` (a FastAPI app), every route behind
Airflow's own authentication (a JWT from ``/auth/token`` or the UI's session cookie) and
its auth manager's permissions: a user sees only the runs of DAGs whose runs the auth
manager lets them read (``is_authorized_dag(GET, RUN)``, the check Airflow's own
``/dagRuns`` routes make), in every list, chart, planner estimate and report:

- ``/sciops/dashboard``                 cost and duration per run over time, cost per image by
                                        macro, filter by project, and the planner form
- ``/sciops/api/runs``                  ledger rows (``?project=``, ``?limit=``)
- ``/sciops/api/runs/{dag_id}/{run_id}/progress``  a run while it goes: phase, images done/failed,
                                        ETA, spend (``sciops run --wait``)
- ``/sciops/api/summary``               what the dashboard draws (``?project=``)
- ``/sciops/api/planner``               N nodes of type X → duration and cost, from past runs
- ``/sciops/api/tradeoff``              instance types × node counts → duration and cost, and the
                                        cheapest option within a deadline (what the planner form shows)
- ``/sciops/runs/{dag_id}/{run_id}/report``  the run's ``report.html``

The UI gets a "SciOps" navigation entry, a "Report" tab on DAG runs and a
"SciOps report" extra link on tasks. The library (``plugins/sciops/``) is excluded from
Airflow's plugin loader (``plugins/.airflowignore``); this file is the only plugin module.
"""
from __future__ import annotations

import html
import json
import statistics
from typing import Any
from urllib.parse import quote

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


def may_read_runs(user, dag_ids: set[str]) -> set[str]:
    """The DAGs among ``dag_ids`` whose runs the auth manager lets ``user`` read.

    The same question Airflow's own ``GET /dagRuns`` asks (``is_authorized_dag`` with method
    GET and entity RUN, with the DAG's team in multi-team mode), so the plugin never shows
    more than the Airflow UI would: with the simple auth manager every role may read every
    DAG; with FAB or Keycloak, per-DAG permissions hold here too.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    teams = DagModel.get_dag_id_to_team_name_mapping(sorted(dag_ids)) if dag_ids else {}
    manager = get_auth_manager()
    return {d for d in dag_ids if manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                             details=DagDetails(id=d, team_name=teams.get(d)),
                                                             user=user)}


def _user():
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


User = _user()


def _readable(user=User) -> set[str]:
    """A dependency: the DAG ids (of those in the ledger) whose runs the requesting user may read."""
    from sciops.accounting import ledger

    return may_read_runs(user, ledger.dag_ids())


Readable = Depends(_readable)


def _rows(readable: set[str], project: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    from sciops.accounting import ledger

    out = []
    for r in ledger.rows(project=project or None, limit=limit, dag_ids=readable):
        r = dict(r)
        for key in ("params", "phases", "cost"):
            r[key] = json.loads(r[key]) if r.get(key) else {}
        out.append(r)
    return out


@app.get("/api/runs")
def api_runs(project: str | None = None, limit: int = Query(200, ge=1, le=5000),
             readable: set[str] = Readable) -> dict[str, Any]:
    return {"runs": _rows(readable, project, limit)}


def summary(readable: set[str], project: str | None = None) -> dict[str, Any]:
    """Every run's overview columns (no JSON columns: 10,000 runs read in a fraction of a second)."""
    from sciops.accounting import ledger

    rows = ledger.rows(project=project or None, limit=None, dag_ids=readable, columns=ledger.OVERVIEW_COLUMNS)
    per_run = sorted(rows, key=lambda r: r["started_at"] or 0)
    by_macro: dict[str, list[float]] = {}
    for r in rows:
        if r.get("cost_per_image_usd") is not None:
            by_macro.setdefault(r["macro"] or "?", []).append(r["cost_per_image_usd"])
    return {"project": project, "runs": len(rows), "per_run": per_run,
            "cost_per_image_by_macro": {m: {"median_usd": statistics.median(v), "runs": len(v)}
                                        for m, v in sorted(by_macro.items())},
            "projects": sorted({r["project"] for r in rows if r.get("project")})}


@app.get("/api/summary")
def api_summary(project: str | None = None, readable: set[str] = Readable) -> dict[str, Any]:
    return summary(readable, project)


@app.get("/api/planner")
def api_planner(macro: str = Query(..., description="macro name or sha256"), images: int = Query(..., ge=1),
                nodes: int = Query(1, ge=1, le=10000), instance_type: str | None = None,
                backend: str = Query("parallelcluster"), region: str = "us-east-1", memory_mb: int = 2048,
                hourly_rate_usd: float = 0.0, project: str | None = None,
                readable: set[str] = Readable) -> dict[str, Any]:
    """What N nodes of type X would take and cost for ``images`` images, from past runs of the macro."""
    from sciops.accounting import costs

    found = _past(macro, project, readable)
    if backend == "parallelcluster" and instance_type:
        try:
            costs.check_types([instance_type], region)
        except costs.PlannerError as exc:
            raise HTTPException(422, str(exc)) from None
    est = costs.estimate(images, found["seconds_per_image"], backend=backend, nodes=nodes,
                         instance_type=instance_type, region=region, memory_mb=memory_mb,
                         hourly_rate_usd=hourly_rate_usd)
    return {"macro": macro, "images": images, "from_runs": found["runs"],
            "seconds_per_image": found["seconds_per_image"], "estimate": est}


@app.get("/api/tradeoff")
def api_tradeoff(macro: str = Query(..., description="macro name or sha256"), images: int = Query(..., ge=1),
                 deadline_h: float | None = Query(None, gt=0), region: str = "us-east-1",
                 instance_types: str = Query("", description="comma-separated; empty = every priced type"),
                 nodes: str = Query("1,2,4,8,16,32", description="comma-separated node counts"),
                 memory_mb: int = Query(2048, ge=256), project: str | None = None,
                 readable: set[str] = Readable) -> dict[str, Any]:
    """Time and cost over instance types × node counts, and the cheapest option within the deadline."""
    found = _past(macro, project, readable)
    return {"macro": macro, "images": images, "from_runs": found["runs"],
            "seconds_per_image": found["seconds_per_image"],
            **_tradeoff(images, found["seconds_per_image"], deadline_h, region, instance_types, nodes, memory_mb)}


def _past(macro: str, project: str | None, readable: set[str]) -> dict[str, Any]:
    from sciops.accounting import ledger

    found = ledger.past_performance(macro_sha256=macro, project=project or None, dag_ids=readable)
    if not found:
        raise HTTPException(404, f"no successful past run of macro {macro!r}: nothing to estimate from; run it once "
                                 "(a small project is enough) and ask again")
    return found


def _tradeoff(images: int, seconds_per_image: float, deadline_h: float | None, region: str, instance_types: str,
              nodes: str, memory_mb: int) -> dict[str, Any]:
    from sciops.accounting import costs

    try:
        counts = [int(n) for n in nodes.replace(" ", "").split(",") if n]
    except ValueError:
        raise HTTPException(422, f"node counts {nodes!r}: give whole numbers separated by commas, e.g. 1,2,4,8") \
            from None
    types = [t.strip() for t in instance_types.split(",") if t.strip()]
    try:
        return costs.tradeoff(images, seconds_per_image, region=region, instance_types=types or None,
                              node_counts=counts, memory_mb=memory_mb,
                              deadline_s=deadline_h * 3600 if deadline_h else None)
    except costs.PlannerError as exc:
        raise HTTPException(422, str(exc)) from None


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m = int(round(seconds / 60))
    return f"{m // 60}:{m % 60:02d}"


def _page(title: str, body: str) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1000px;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}.empty{{color:#777}}
label{{display:inline-block;margin:4px 12px 4px 0}}label span{{display:block;font-size:12px;color:#555}}
tr.best{{background:#e6f4ea;font-weight:bold}}.status-refused{{color:#b26a00}}.status-failed{{color:#d62728}}
.error{{color:#d62728;font-weight:bold}}</style></head><body>{body}</body></html>"""


def _charts(runs: list[dict[str, Any]]) -> str:
    from sciops.reporting import charts

    ran = [r for r in runs if r["status"] != "refused" and r["started_at"]]
    if not ran:
        return '<p class="empty" id="no-runs">No finished runs yet: the charts appear after the first run.</p>'
    if all(not r["cost_usd"] for r in ran):
        cost = (f'<p class="empty" id="cost-chart">Every run so far cost 0 USD ({len(ran)} run(s) on local or '
                'existing backends with hourly_rate_usd 0): nothing to chart. Set hourly_rate_usd to your '
                "facility's charge to see cost here.</p>")
    else:
        cost = charts.time_series([(r["started_at"], r["cost_usd"] or 0.0) for r in ran], "cost per run (USD)",
                                  "cost-chart")
    dur = charts.time_series([(r["started_at"], (r["duration_s"] or 0.0) / 60) for r in ran],
                             "duration per run (minutes)", "duration-chart")
    return f"<h2>Cost per run</h2>{cost}<h2>Duration per run</h2>{dur}"


def _planner(s: dict[str, Any], q: dict[str, Any], readable: set[str]) -> str:
    from sciops.reporting import charts
    from sciops.accounting import costs

    macros = sorted(s["cost_per_image_by_macro"]) or sorted({r["macro"] for r in s["per_run"] if r["macro"]})
    regions = sorted(costs.load_prices().get("on_demand_usd_per_hour", {}))
    opt = lambda values, chosen: "".join(  # noqa: E731
        f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>' for v in values)
    form = f"""<form id="planner" method="get">
<input type="hidden" name="project" value="{_e(q.get('project') or '')}">
<label for="pl-macro"><span>Macro (from past runs)</span><select id="pl-macro" name="macro" required>
{opt(macros, q.get('macro'))}</select></label>
<label for="pl-images"><span>Images</span><input id="pl-images" name="images" type="number" min="1" required
 value="{_e(q.get('images') or 10000)}"></label>
<label for="pl-deadline"><span>Deadline (hours, optional)</span><input id="pl-deadline" name="deadline_h"
 type="number" min="0.1" step="0.1" value="{_e(q.get('deadline_h') or '')}"></label>
<label for="pl-region"><span>Region</span><select id="pl-region" name="region">
{opt(regions, q.get('region') or 'us-east-1')}</select></label>
<label for="pl-memory"><span>Memory per task (MB)</span><input id="pl-memory" name="memory_mb" type="number"
 min="512" value="{_e(q.get('memory_mb') or 2048)}"></label>
<label for="pl-types"><span>Instance types (comma-separated; empty = all priced)</span><input id="pl-types"
 name="instance_types" size="40" value="{_e(q.get('instance_types') or '')}"></label>
<label for="pl-nodes"><span>Node counts</span><input id="pl-nodes" name="nodes"
 value="{_e(q.get('nodes') or '1,2,4,8,16,32')}"></label>
<button type="submit" name="plan" value="1">Compare options</button></form>"""
    if not q.get("plan"):
        return form + ('<p class="empty">Choose a macro and an image count: the planner compares instance types × '
                       'node counts from the measured seconds per image of past runs.</p>' if macros else
                       '<p class="empty">No past runs yet: the planner needs one finished run of a macro.</p>')
    try:
        found = _past(q["macro"], q.get("project"), readable)
        result = _tradeoff(int(q["images"]), found["seconds_per_image"], q.get("deadline_h"),
                           q.get("region") or "us-east-1", q.get("instance_types") or "",
                           q.get("nodes") or "1,2,4,8,16,32", int(q.get("memory_mb") or 2048))
    except HTTPException as exc:
        return form + f'<p class="error" id="planner-error">{_e(exc.detail)}</p>'
    best = result["best"]
    rows = "".join(
        f'<tr class="{"best" if (o["instance_type"], o["nodes"]) == (best["instance_type"], best["nodes"]) else ""}">'
        f'<td>{_e(o["instance_type"])}</td><td>{o["nodes"]}</td><td>{o["concurrent_tasks"]}</td>'
        f'<td>{_hours(o["duration_s"])}</td><td>{o["cost_usd"]:.2f}</td>'
        f'<td>{"—" if o["meets_deadline"] is None else "yes" if o["meets_deadline"] else "no"}</td></tr>'
        for o in result["options"])
    deadline = q.get("deadline_h")
    chart = charts.tradeoff(result["options"], best, deadline)
    return form + f"""<p id="planner-answer"><b>{_e(best['pick'].capitalize())}: {best['nodes']} × {_e(best['instance_type'])}
</b>, about {_hours(best['duration_s'])} (h:mm) for {_e(q['images'])} images, {best['cost_usd']:.2f} USD.
From {found['runs']} past run(s) at {found['seconds_per_image']:.3g} task-seconds per image; on-demand prices
as of {_e(result['prices_as_of'])}, {result['create_seconds'] // 60} min cluster creation and
{result['boot_seconds'] // 60} min node boot included.</p>
{chart}
<table id="planner-table"><thead><tr><th>instance type</th><th>nodes</th><th>tasks at once</th>
<th>duration (h:mm)</th><th>cost (USD)</th><th>within deadline</th></tr></thead><tbody>{rows}</tbody></table>"""


@app.get("/api/runs/{dag_id}/{run_id}/progress")
def api_run_progress(dag_id: str, run_id: str, user=User) -> dict[str, Any]:
    """A run while it goes: Airflow's state, and from its run folder (where this server sees it) the phase,
    images done / failed of the total, ETA and spend (what ``sciops run --wait`` shows)."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from sciops.cli.progress import run_progress

    if not may_read_runs(user, {dag_id}):
        raise HTTPException(403, f"your Airflow role may not read the runs of DAG {dag_id}")
    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dr is None:
            raise HTTPException(404, f"no run {run_id} of DAG {dag_id}")
        state, conf = getattr(dr.state, "value", dr.state), dict(dr.conf or {})
    return {"run_id": run_id, "state": state, **run_progress(conf, run_id)}


@app.get("/dashboard", response_class=HTMLResponse)
def dashboard(project: str | None = None, macro: str | None = None, images: int | None = Query(None, ge=1),
              deadline_h: float | None = Query(None, gt=0), region: str | None = None,
              memory_mb: int | None = Query(None, ge=256), instance_types: str | None = None,
              nodes: str | None = None, plan: str | None = None, readable: set[str] = Readable) -> str:
    s = summary(readable, project or None)
    runs = s["per_run"]
    options = "".join(f'<option value="{_e(p)}"{" selected" if p == project else ""}>{_e(p)}</option>'
                      for p in s["projects"])
    macros = "".join(f"<tr><td>{_e(m)}</td><td>{v['median_usd']:.5f}</td><td>{v['runs']}</td></tr>"
                     for m, v in s["cost_per_image_by_macro"].items())
    table = "".join(
        f'<tr class="status-{_e(r["status"])}"><td>{_e(_day(r["started_at"]))}</td><td>{_e(r["project"])}</td>'
        f'<td><a href="runs/{quote(r.get("dag_id") or "fiji_project", safe="")}/'
        f'{quote(r["airflow_run_id"] or r["run_id"], safe="")}/report">'
        f'{_e(r["run_id"])}</a></td><td>{_e(r["status"])}</td>'
        f'<td>{_e(r["images_ok"] if r["images_ok"] is not None else "—")}/{_e(r["images_total"] or "—")}</td>'
        f'<td>{_hours(r["duration_s"]) if r["status"] != "refused" else "—"}</td>'
        f'<td>{(r["cost_usd"] or 0):.4f}</td><td title="{_e(r.get("reason"))}">{_e((r.get("reason") or "")[:160])}'
        f'</td></tr>' for r in reversed(runs[-RUNS_LISTED:]))
    if len(runs) > RUNS_LISTED:
        table += (f'<tr id="runs-more"><td colspan="8" class="empty">… and {len(runs) - RUNS_LISTED:,} older runs: '
                  'choose a project above, or read them all from <code>/sciops/api/runs?limit=5000</code></td></tr>')
    q = {"project": project, "macro": macro, "images": images, "deadline_h": deadline_h, "region": region,
         "memory_mb": memory_mb, "instance_types": instance_types, "nodes": nodes, "plan": plan}
    return _page("SciOps runs", f"""<h1>SciOps runs{' — ' + _e(project) if project else ''}</h1>
<form method="get" id="filter"><label for="project"><span>Project</span><select id="project" name="project">
<option value="">all projects</option>{options}</select></label> <button type="submit">Show</button></form>
{_charts(runs)}
<h2>Cost per image by macro (median)</h2><table id="by-macro"><tr><th>macro</th><th>USD per image</th><th>runs</th>
</tr>{macros or '<tr><td colspan="3" class="empty">no finished runs yet</td></tr>'}</table>
<h2 id="planner-heading">Planner: instance types × node counts</h2>{_planner(s, q, readable)}
<h2>Runs</h2><table id="runs"><tr><th>started (UTC)</th><th>project</th><th>run</th><th>status</th><th>images ok</th>
<th>duration (h:mm)</th><th>USD</th><th>reason</th></tr>{table}</table>""")


#: The newest runs the dashboard's table lists (the charts and medians take every run).
RUNS_LISTED = 200


def _day(epoch: float | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if epoch else "—"


@app.get("/runs/{dag_id}/{run_id}/report")
def run_report(dag_id: str, run_id: str, user=User):
    """The run's report.html: only a file the ledger recorded for that run is ever served.

    A run without a report (refused in validate, still running, or unknown) gets a readable
    page saying which, not raw JSON. A DAG whose runs the user may not read is 403, whether
    or not the run exists (no probing for run ids).
    """
    from sciops.run.project import safe_run_id

    readable = may_read_runs(user, {dag_id})
    if not readable:
        return HTMLResponse(_page("Not allowed", f'<h1>Not allowed</h1><p id="forbidden">Your Airflow role may not '
                                                 f'read the runs of DAG <b>{_e(dag_id)}</b>; ask an Airflow admin '
                                                 'for read access to it.</p>'), status_code=403)
    from sciops.accounting import ledger

    row = ledger.find(dag_id, run_id, safe_run_id(run_id))
    if row and row.get("report"):
        try:
            return FileResponse(row["report"], media_type="text/html")
        except (OSError, RuntimeError):
            pass
    if row and row["status"] == "refused":
        body = (f'<h1>Run {_e(run_id)} was refused</h1><p id="refused">Project <b>{_e(row["project"])}</b>, '
                f'{_e(_day(row["started_at"]))} UTC: <code>validate</code> refused it before anything was spent, '
                'so it has no report. Fix what the reason names and trigger it again.</p>'
                f'<pre id="reason">{_e(row.get("reason"))}</pre>')
        return HTMLResponse(_page(f"Run {run_id}: refused", body + '<p><a href="../../../dashboard">All runs</a></p>'))
    body = (f'<h1>No report for run {_e(run_id)}</h1><p id="no-report">'
            + ("The ledger has this run, but its report file is missing: "
               f'<code>{_e(row.get("report"))}</code>.' if row else
               "The ledger has no row for it yet: the run may still be going (the report is written by its "
               "<code>record</code> task), or it stopped before <code>validate</code> finished; see its task logs.")
            + '</p><p><a href="../../../dashboard">All runs</a></p>')
    return HTMLResponse(_page(f"Run {run_id}: no report", body), status_code=404)


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
        {"name": "SciOps", "href": "/sciops/dashboard", "destination": "nav", "url_route": "sciops-runs"},
        {"name": "Report", "href": "/sciops/runs/{DAG_ID}/{RUN_ID}/report", "destination": "dag_run",
         "url_route": "sciops-report"},
    ]
    global_operator_extra_links = [RunReportLink()]
