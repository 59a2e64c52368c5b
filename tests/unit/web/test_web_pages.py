"""The dashboard's and the report stand-ins' HTML (sciops.web.pages): everything from the ledger escaped."""
from __future__ import annotations

import pytest
from fastapi import HTTPException

from sciops.web import pages

T0 = 1_800_000_000.0


def _run(i=0, **over):
    return {"dag_id": "fiji_project", "run_id": f"r{i}", "airflow_run_id": f"manual__{i}", "project": "alpha",
            "status": "success", "macro": "count", "started_at": T0 + i, "duration_s": 3700.0, "cost_usd": 0.5,
            "images_ok": 9, "images_total": 10, "reason": None, "cost_per_image_usd": 0.05, **over}


def _summary(runs):
    return {"project": None, "runs": len(runs), "per_run": runs, "projects": sorted({r["project"] for r in runs}),
            "cost_per_image_by_macro": {"count": {"median_usd": 0.05, "runs": len(runs)}}}


def test_ledger_values_are_escaped_and_links_quoted():
    run = _run(project='<b>"p"</b>', run_id="<script>x</script>", airflow_run_id="manual__a&b/c",
               status="refused", reason="bad <memory> 'lots'", images_ok=None, duration_s=None, cost_usd=None)
    page = pages.dashboard(_summary([run]), None, {}, set())
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>&#34;p&#34;" not in page and "&lt;b&gt;&#34;p&#34;&lt;/b&gt;" in page
    assert 'title="bad &lt;memory&gt; &#39;lots&#39;"' in page
    assert 'href="runs/fiji_project/manual__a%26b%2Fc/report"' in page
    # a refused run: no duration, no images, 0 cost; no run that ran, so no charts
    assert "<td>—/10</td><td>—</td><td>0.0000</td>" in page and 'id="no-runs"' in page
    assert "None" not in page


def test_the_planner_error_is_a_sentence_on_the_page(monkeypatch):
    def past(macro, project, readable):
        raise HTTPException(404, f"no successful past run of macro {macro!r} <here>")

    monkeypatch.setattr(pages.planner, "past", past)
    page = pages.dashboard(_summary([]), None, {"plan": "1", "macro": "m<1>", "images": 5}, set())
    assert '<p class="error" id="planner-error">no successful past run of macro &#39;m&lt;1&gt;&#39; &lt;here&gt;' \
        in page
    assert 'value="2048"' in page and 'value="1,2,4,8,16,32"' in page   # the form's defaults


def test_only_the_newest_runs_are_listed():
    runs = [_run(i, status="failed") for i in range(pages.RUNS_LISTED + 1234)]
    page = pages.dashboard(_summary(runs), None, {}, set())
    assert 'id="runs-more"' in page and "1,234 older runs" in page
    assert f">r{len(runs) - 1}<" in page and ">r1233<" not in page


@pytest.mark.parametrize("row,text", [
    (None, "The ledger has no row for it yet"),
    ({"report": "/gone/<r>.html"}, "its report file is missing: <code>/gone/&lt;r&gt;.html</code>"),
])
def test_report_stand_ins(row, text):
    page = pages.no_report("manual__<never>", row)
    assert "<h1>No report for run manual__&lt;never&gt;</h1>" in page and text in page
    assert 'Airflow role may not read the runs of DAG <b>d&lt;1&gt;</b>' in pages.forbidden("d<1>")
    refused = pages.refused("r1", {"project": "p", "started_at": T0, "reason": "memory: <lots>"})
    assert '<pre id="reason">memory: &lt;lots&gt;</pre>' in refused and "2027-01-15 08:00 UTC" in refused
