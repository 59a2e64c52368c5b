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
    run = _run(project='<b>"p"</b>', run_id="r-x", airflow_run_id="manual__<script>x</script>&b/c",
               status="refused", reason="bad <memory> 'lots'", images_ok=None, duration_s=None, cost_usd=None)
    page = pages.dashboard(_summary([run]), None, {}, set())
    assert "<script>x" not in page and ">manual__&lt;script&gt;x&lt;/script&gt;&amp;b/c</a>" in page  # Airflow's id
    assert "<b>&#34;p&#34;" not in page and "&lt;b&gt;&#34;p&#34;&lt;/b&gt;" in page
    assert '<td class="reason">bad &lt;memory&gt; &#39;lots&#39;</td>' in page
    assert 'href="runs/fiji_project/manual__%3Cscript%3Ex%3C%2Fscript%3E%26b%2Fc/report"' in page
    # a refused run: no duration, no images, 0 cost; no run that ran, so no charts
    assert ('<td class="num">—/10</td>\n<td class="num" title="">—</td><td class="num">0.0000</td>' in page
            and 'id="no-runs"' in page)
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
    assert f">manual__{len(runs) - 1}<" in page and ">manual__1233<" not in page


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


@pytest.mark.parametrize("seconds,shown", [(45.2, "45 s"), (0.8, "0.8 s"), (83.0, "1 min 23 s"),
                                           (3700.0, "1 h 01 min")])
def test_durations_read_as_people_say_them(seconds, shown):
    """Not h:mm: a 45 s run once read "0:01"."""
    page = pages.dashboard(_summary([_run(duration_s=seconds)]), None, {}, set())
    assert f'<td class="num" title="{seconds:.1f} s">{shown}</td>' in page


def test_a_long_reason_is_whole_on_the_page():
    """Its start shown, the rest a click away in the same cell, all of it on hover; never cut off."""
    reason = "macro: the smoke run failed: " + " ".join(f"word{i}" for i in range(200)) + " THE END"
    page = pages.dashboard(_summary([_run(status="failed", reason=reason)]), None, {}, set())
    shown = page[page.index('<td class="reason"'):]
    shown = shown[:shown.index("</td>")]
    assert f'title="{reason}"' in shown and "<details><summary>" in shown
    summary, rest = shown.split("<details><summary>", 1)[1].split('<span class="more">… (all of it)</span></summary>')
    assert f"{summary} {rest.replace('</details>', '')}" == reason
