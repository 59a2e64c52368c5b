"""The HTML pages: the dashboard (charts, medians, the planner form, the runs) and the report's stand-ins.

Jinja2 templates (``templates/``) with autoescape on: every value from the ledger, a query or
an error is escaped (``None`` renders empty); only the charts' SVG, made here by matplotlib,
goes in as markup. The functions below turn the data into what the templates show.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException
from markupsafe import Markup

from sciops.run.config import DEFAULT_MEMORY_MB
from sciops.web import planner

# Imports inside functions here are deliberate: Airflow's plugin manager imports the plugin in every
# Airflow process (scheduler, workers, triggerer, dag-processor); the ledger, charts and planner code load
# only when a page or route is asked for.

#: The newest runs the dashboard's table lists (the charts and medians take every run).
RUNS_LISTED = 200


@lru_cache(maxsize=1)
def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              finalize=lambda x: "" if x is None else x, undefined=jinja2.StrictUndefined)


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m = int(round(seconds / 60))
    return f"{m // 60}:{m % 60:02d}"


def day(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if epoch else "—"


#: A reason longer than this shows its start, and the rest a click away (all of it on hover).
REASON_SHOWN = 240


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    """A ledger row as the runs table shows it: Airflow's own run id, a readable duration, the whole reason."""
    from sciops.reporting.durations import duration

    run_id = r.get("airflow_run_id") or r["run_id"]
    reason = r.get("reason") or ""
    long = len(reason) > REASON_SHOWN
    cut = reason.rfind(" ", REASON_SHOWN // 2, REASON_SHOWN) if long else len(reason)   # at a word, if one is near
    cut = cut if cut > 0 else REASON_SHOWN
    ran = r["status"] != "refused" and r["duration_s"] is not None
    return {"status": r["status"], "status_class": str(r["status"]).replace(" ", "-"), "started": day(r["started_at"]),
            "project": r["project"], "run_id": run_id,
            "report_href": f'runs/{quote(r.get("dag_id") or "fiji_project", safe="")}/{quote(run_id, safe="")}/report',
            "images_ok": r["images_ok"] if r["images_ok"] is not None else "—",
            "images_total": r["images_total"] or "—",
            "duration": duration(r["duration_s"]) if ran else "—",
            "duration_title": f'{r["duration_s"]:.1f} s' if ran else "", "cost": f'{(r["cost_usd"] or 0):.4f}',
            "reason": reason, "reason_short": reason[:cut], "reason_more": reason[cut:].lstrip() if long else ""}


def dashboard(s: dict[str, Any], project: str | None, q: dict[str, Any], readable: set[str]) -> str:
    """The dashboard of ``s`` (what :func:`sciops.web.api.summary` reads) with the planner form filled from ``q``."""
    runs = s["per_run"]
    rows = [_run_row(r) for r in reversed(runs[-RUNS_LISTED:])]
    by_macro = [{"macro": m, "median_usd": f"{v['median_usd']:.5f}", "runs": v["runs"]}
                for m, v in s["cost_per_image_by_macro"].items()]
    older = f"{len(runs) - RUNS_LISTED:,}" if len(runs) > RUNS_LISTED else None
    return render("dashboard.html", title="SciOps runs", project=project, projects=s["projects"], rows=rows,
                  by_macro=by_macro, older=older, planner=planner_form(s, q, readable), **charts(runs))


def charts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The cost and duration charts' SVG (cost: None when every run cost 0), and how many runs ran."""
    from sciops.reporting import charts

    ran = [r for r in runs if r["status"] != "refused" and r["started_at"]]
    if not ran:
        return {"ran": 0, "cost_chart": None, "duration_chart": None}
    cost = None
    if not all(not r["cost_usd"] for r in ran):
        cost = Markup(charts.time_series([(r["started_at"], r["cost_usd"] or 0.0) for r in ran],
                                         "cost per run (USD)", "cost-chart"))
    longest = max(r["duration_s"] or 0.0 for r in ran)   # the unit the runs are read in: 45 s is not "0.75 min"
    unit, per = ("seconds", 1) if longest < 180 else ("minutes", 60) if longest < 3 * 3600 else ("hours", 3600)
    dur = charts.time_series([(r["started_at"], (r["duration_s"] or 0.0) / per) for r in ran],
                             f"duration per run ({unit})", "duration-chart")
    return {"ran": len(ran), "cost_chart": cost, "duration_chart": Markup(dur), "measure_charts": measures(ran)}


#: Projects whose key measure the dashboard charts (the ones that ran last).
MEASURE_CHARTS_MAX = 6


def measures(ran: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per project, its key measure's median per run over time: a failing stain or focus drifts here first."""
    from sciops.reporting import charts

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ran:
        if r.get("key_measure") and r.get("key_median") is not None:
            groups.setdefault((r["project"], r["key_measure"]), []).append(r)
    newest = sorted(groups.items(), key=lambda kv: -max(r["started_at"] for r in kv[1]))[:MEASURE_CHARTS_MAX]
    return [{"project": project, "measure": key, "runs": len(rs),
             "chart": Markup(charts.time_series([(r["started_at"], r["key_median"]) for r in rs],
                                                f"median {key}", f"measure-chart-{i}", height=200))}
            for i, ((project, key), rs) in enumerate(sorted(newest))]


def planner_form(s: dict[str, Any], q: dict[str, Any], readable: set[str]) -> dict[str, Any]:
    """The planner form's choices and values, and with ``plan`` in ``q`` its answer or the error it met."""
    from sciops.accounting import costs
    from sciops.reporting import charts

    macros = sorted(s["cost_per_image_by_macro"]) or sorted({r["macro"] for r in s["per_run"] if r["macro"]})
    regions = sorted(costs.load_prices().get("on_demand_usd_per_hour", {}))
    form = {"project": q.get('project') or '', "macro": q.get('macro'), "images": q.get('images') or 10000,
            "deadline_min": f"{q['deadline_min']:g}" if isinstance(q.get('deadline_min'), float)
            else q.get('deadline_min') or '', "slots": q.get('slots') or '',
            "task_hour_usd": q.get('task_hour_usd') or '', "region": q.get('region') or 'us-east-1',
            "memory_mb": q.get('memory_mb') or DEFAULT_MEMORY_MB, "instance_types": q.get('instance_types') or '',
            "nodes": q.get('nodes') or '1,2,4,8,16,32'}
    out: dict[str, Any] = {"macros": macros, "regions": regions, "form": form, "error": None, "answer": None}
    if not q.get("plan"):
        return out
    try:
        found = planner.past(q["macro"], q.get("project"), readable)
        deadline_h = float(q["deadline_min"]) / 60 if q.get("deadline_min") else None
        result = planner.tradeoff(int(q["images"]), found["seconds_per_image"], deadline_h,
                                  q.get("region") or "us-east-1", q.get("instance_types") or "",
                                  q.get("nodes") or "1,2,4,8,16,32", int(q.get("memory_mb") or DEFAULT_MEMORY_MB),
                                  int(q.get("slots") or 0), float(q.get("task_hour_usd") or 0.0))
    except HTTPException as exc:
        out["error"] = exc.detail
        return out
    except ValueError:
        out["error"] = "deadline (minutes), slots and the task-hour rate must be numbers"
        return out
    best = result["best"]
    def row(o: dict[str, Any]) -> dict[str, Any]:
        return {"best": (o["instance_type"], o["nodes"]) == (best["instance_type"], best["nodes"]),
                "instance_type": o["instance_type"], "nodes": o["nodes"], "concurrent_tasks": o["concurrent_tasks"],
                "duration": hours(o["duration_s"]), "cost": f'{o["cost_usd"]:.2f}',
                "within": "—" if o["meets_deadline"] is None else "yes" if o["meets_deadline"] else "no"}

    options, front = [row(o) for o in result["options"]], [row(o) for o in result["front"]]
    out["answer"] = {"pick": best["pick"].capitalize(), "nodes": best["nodes"], "instance_type": best["instance_type"],
                     "option": best["instance_type"] if best.get("own") else f"{best['nodes']} × {best['instance_type']}",
                     "duration": hours(best["duration_s"]), "images": q["images"], "cost": f"{best['cost_usd']:.2f}",
                     "runs": found["runs"], "seconds_per_image": f"{found['seconds_per_image']:.3g}",
                     "prices_as_of": result["prices_as_of"], "create_minutes": result["create_seconds"] // 60,
                     "boot_minutes": result["boot_seconds"] // 60, "options": options, "front": front,
                     "chart": Markup(charts.tradeoff(result["options"], best, deadline_h, result["front"]))}
    return out


def forbidden(dag_id: str) -> str:
    return render("forbidden.html", title="Not allowed", dag_id=dag_id)


def refused(run_id: str, row: dict[str, Any]) -> str:
    return render("refused.html", title=f"Run {run_id}: refused", run_id=run_id, project=row["project"],
                  started=day(row["started_at"]), reason=row.get("reason"))


def no_report(run_id: str, row: dict[str, Any] | None) -> str:
    return render("no_report.html", title=f"Run {run_id}: no report", run_id=run_id, in_ledger=bool(row),
                  report=row.get("report") if row else None)
