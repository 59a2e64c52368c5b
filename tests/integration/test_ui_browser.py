"""The pages a scientist uses, in headless Chromium against the real Airflow API server.

The trigger form (Airflow's own UI, drawn from the DAG's Params), the SciOps dashboard and
its planner, the "Report" tab of a refused run. Assertions are on the rendered DOM;
screenshots land in artifacts/screenshots/.
"""
from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import quote

import pytest
from helpers import get

T0 = 1_800_000_000.0


def _api(base, token, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def page(browser, api_server):
    base, token = api_server
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.add_cookies([{"name": "_token", "value": token, "url": base}])  # what the UI's login sets
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _open_trigger_form(page, base):
    page.goto(f"{base}/dags/fiji_project")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.locator("[role=dialog][data-state=open]")
    dialog.get_by_role("button", name="Run", exact=True).click()
    return dialog


def test_trigger_form_shows_real_defaults_bounds_and_precedence(page, api_server, screenshot):
    from sciops.run import config, form

    base, token = api_server
    dialog = _open_trigger_form(page, base)
    for section in config.SECTIONS:
        assert dialog.get_by_role("button", name=section, exact=True).count() == 1, section
    # numbers show their default and carry their bounds; booleans and enums their true default
    images = dialog.locator("input[name=element_images_per_task]")
    assert images.input_value() == "0"   # 0 = auto
    assert (images.get_attribute("aria-valuemin"), images.get_attribute("aria-valuemax")) == ("0", "100000")
    assert dialog.locator("input[name=element_smoke_test]").is_checked()
    assert dialog.locator("#element_backend").inner_text().strip() == "local"
    assert dialog.locator("#element_launcher").inner_text().strip() == "auto"
    assert dialog.locator("input[name=element_macro]").input_value() == "count_nuclei"
    assert "null" not in dialog.inner_text()
    # each field says how it combines with project.yaml
    assert dialog.get_by_text(form.PROJECT_YAML_NOTE, exact=False).count() >= 10
    dialog.get_by_role("button", name="Existing cluster (SSH)", exact=True).click()
    assert dialog.locator("#element_scheduler").inner_text().strip() == "the backend's own"
    screenshot(dialog, "form")
    dialog.get_by_role("button", name="Run", exact=True).click()  # one section open at a time
    # the form holds a number inside its bounds (it clamps -1 to the minimum)
    images.fill("-1")
    images.blur()
    assert images.input_value() == "0"
    images.fill("10")
    images.blur()
    dialog.locator("input[name=element_project]").fill("formtest")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    page.wait_for_url(re.compile(r".*/runs/.*"), timeout=30_000)
    status, runs = _api(base, token, "GET", "/api/v2/dags/fiji_project/dagRuns?order_by=-run_after&limit=5")
    conf = next(r["conf"] for r in runs["dag_runs"] if r["conf"].get("project") == "formtest")
    # the form sends every field; only the one changed counts as given, so project.yaml keeps the rest
    assert set(conf) == set(config.FIELDS)
    sources = config.sources(conf, {"images_per_task": 7, "max_attempts": 5})
    assert (sources["images_per_task"], sources["max_attempts"], sources["memory"]) == ("run", "project.yaml",
                                                                                         "default")
    # the REST API checks the same schema when a run is created: refused with the field named
    status, body = _api(base, token, "POST", "/api/v2/dags/fiji_project/dagRuns",
                        {"logical_date": None, "conf": {"project": "formtest", "images_per_task": -1}})
    assert status == 400 and "images_per_task" in body and "minimum of 0" in body, body


@pytest.fixture(scope="module")
def zero_cost_rows(ledger_rows):
    from sciops.accounting import ledger

    for i in range(2):
        ledger.write({"run_id": f"manual__free-{i}", "airflow_run_id": f"manual__free-{i}", "dag_id": "fiji_project",
                      "project": "gamma", "status": "success", "params": {"backend": "local"},
                      "macro": {"name": "count_free"}, "images": {"total": 8, "ok": 8, "failed": 0},
                      "started_at": T0 + 3 * 86400 + i * 3600, "ended_at": T0 + 3 * 86400 + i * 3600 + 30,
                      "cost": {"total_usd": 0.0}, "cost_per_image_usd": 0.0})


def test_dashboard_charts_and_planner(page, api_server, ledger_rows, zero_cost_rows, screenshot):
    base, _ = api_server
    page.goto(f"{base}/sciops/dashboard?project=alpha")
    # dates on the time axes (the two runs are a day apart in January 2027)
    for chart in ("cost-chart", "duration-chart"):
        labels = " ".join(page.locator(f'#{chart} g[id^="xtick"] text').all_text_contents()
                          + page.locator(f"#{chart} text").all_text_contents())
        assert re.search(r"Jan|2027", labels), (chart, labels)
    # every planner input is labelled
    for control in page.locator("#planner input:not([type=hidden]), #planner select").all():
        assert page.locator(f'label[for="{control.get_attribute("id")}"]').count() == 1, control.get_attribute("id")
    page.select_option("#pl-macro", "count_api")
    page.fill("#pl-images", "10000")
    page.fill("#pl-deadline", "60")   # minutes
    page.fill("#pl-types", "c5.xlarge, m5.2xlarge")
    page.fill("#pl-nodes", "1,2,4,8")
    page.fill("#pl-slots", "16")      # the lab's own cluster too
    page.fill("#pl-rate", "0.05")
    page.get_by_role("button", name="Compare options").click()
    page.wait_for_selector("#planner-table")
    every = page.locator("#planner-all tbody tr")
    assert every.count() == 9  # 2 instance types × 4 node counts, and the own cluster
    # the answer's table is the Pareto front: no row both slower and dearer than another
    front = [r.locator("td").all_text_contents() for r in page.locator("#planner-table tbody tr").all()]
    assert 1 <= len(front) < 9, front

    def minutes(hm):
        h, m = hm.split(":")
        return int(h) * 60 + int(m)

    for r in front:
        assert not any(minutes(o[3]) < minutes(r[3]) and float(o[4]) < float(r[4]) for o in front), front
    best = page.locator("#planner-table tr.best td").all_text_contents()
    assert len(best) == 6 and best[5] == "yes", best
    # the pick is the cheapest option that meets the deadline, own cluster included
    table = [r.locator("td").all_text_contents() for r in every.all()]
    within = [r for r in table if r[5] == "yes"]
    assert float(best[4]) == min(float(r[4]) for r in within)
    assert any(r[0] == "own cluster (16 slots)" for r in table)
    assert "Cheapest within the deadline" in page.locator("#planner-answer").inner_text()
    chart = page.locator("svg#tradeoff-chart")
    assert chart.count() == 1 and int(chart.get_attribute("data-marks")) == 9
    assert "deadline 60 min" in chart.inner_html()
    assert chart.bounding_box()["width"] > 500
    screenshot(page, "planner")
    # an unknown instance type gets a sentence, not {"detail": "'z9.huge'"}
    page.fill("#pl-types", "z9.huge")
    page.get_by_role("button", name="Compare options").click()
    error = page.locator("#planner-error").inner_text()
    assert "unknown instance type 'z9.huge'" in error and "c5.xlarge" in error, error
    # every run cost 0: a sentence, not an axis that reads "1 USD"
    page.goto(f"{base}/sciops/dashboard?project=gamma")
    assert "Every run so far cost 0 USD" in page.locator("#cost-chart").inner_text()
    assert page.locator("svg#duration-chart").count() == 1


def test_refused_run_on_dashboard_and_in_its_report_tab(page, api_server, screenshot):
    from sciops.run import config
    from sciops.phases import checks
    from sciops.errors import ConfigError

    base, token = api_server
    status, run = _api(base, token, "POST", "/api/v2/dags/fiji_project/dagRuns",
                       {"logical_date": None, "conf": {"project": "refusedproj"}})
    assert status == 200, run
    run_id = run["dag_run_id"]
    conf = {"project": "refusedproj", "memory": "lots"}
    with pytest.raises(ConfigError):
        with checks.refusals(conf, run_id, "fiji_project", "manual"):
            config.build(conf)
    page.goto(f"{base}/sciops/dashboard?project=refusedproj")
    row = page.locator("#runs tr.status-refused")
    assert row.count() == 1
    assert "memory" in row.inner_text() and "not a memory size" in row.inner_text()
    # the run's own "Report" tab in Airflow's UI: a readable page, not raw JSON
    page.goto(f"{base}/dags/fiji_project/runs/{quote(run_id, safe='')}")
    page.get_by_text("Report", exact=True).first.click()
    frame = page.frame_locator("iframe")
    frame.locator("#refused").wait_for()
    assert "not a memory size" in frame.locator("#reason").inner_text()
    screenshot(page, "report-tab")
    status, body = get(base, "/sciops/runs/fiji_project/manual__never/report", token)
    assert status == 404 and "<h1>No report for run manual__never</h1>" in body and '"detail"' not in body


def test_a_runs_report_tab_and_dashboard_row_as_a_scientist_reads_them(page, api_server, tmp_path, screenshot):
    """Issue 37, item 4: Airflow's own run id, every timeline row labelled, one cost table, phases that make the
    wall time; the dashboard in Airflow's fonts, with readable durations and whole reasons."""
    from test_report_browser import _doc, _run_dir

    from sciops.accounting import ledger
    from sciops.reporting import report
    from sciops.run.project import safe_run_id

    base, token = api_server
    status, run = _api(base, token, "POST", "/api/v2/dags/fiji_project/dagRuns",
                       {"logical_date": None, "conf": {"project": "polished"}})
    assert status == 200, run
    run_id = run["dag_run_id"]
    # two tasks at once on node-a: its second row once read "-"
    run_dir = _run_dir(tmp_path / "run", ((1, "node-a", 0, 30, 0, 1), (2, "node-a", 5, 30, 0, 1),
                                          (3, "node-b", 1, 20, 0, 1)))
    doc = _doc(run_id=safe_run_id(run_id), airflow_run_id=run_id, dag_id="fiji_project", project="polished",
               report=str(run_dir / "report.html"), started_at=T0 + 5 * 86400, ended_at=T0 + 5 * 86400 + 83)
    report.write(run_dir, doc)
    ledger.write(doc)
    reason = ("collate: " + "; ".join(f"image plate1_{i:03d}.tif: the macro left no Results table" for i in range(12))
              + "; see failures.csv")
    ledger.write({**doc, "run_id": "manual__polished-failed", "airflow_run_id": "manual__polished-failed",
                  "status": "failed", "reason": reason, "started_at": T0 + 4 * 86400,
                  "ended_at": T0 + 4 * 86400 + 45.2, "report": None})
    page.goto(f"{base}/")
    page.get_by_test_id("nav-sidebar").wait_for()   # Airflow's UI drawn, its styles applied
    airflow_font = page.evaluate("getComputedStyle(document.body).fontFamily")
    page.goto(f"{base}/sciops/dashboard?project=polished")
    assert page.evaluate("getComputedStyle(document.body).fontFamily").split(",")[0] == airflow_font.split(",")[0]
    rows = page.locator("#runs tbody tr")
    assert rows.nth(0).locator("td").nth(2).inner_text() == run_id   # Airflow's id, not the folder's
    assert [rows.nth(i).locator("td").nth(5).inner_text() for i in range(2)] == ["1 min 23 s", "45 s"]
    cell = rows.nth(1).locator("td.reason")
    assert cell.get_attribute("title") == reason    # all of it on hover
    cell.locator("summary").click()                  # and in place
    assert cell.inner_text().split() == reason.split()
    assert cell.evaluate("c => c.scrollWidth <= c.clientWidth")
    screenshot(page, "dashboard")
    page.goto(f"{base}/dags/fiji_project/runs/{quote(run_id, safe='')}")
    page.get_by_text("Report", exact=True).first.click()
    frame = page.frame_locator("iframe")
    assert frame.locator("h1").inner_text() == f"SciOps run {run_id} — polished"
    labels = [t.strip() for t in frame.locator('#timeline g[id^="ytick"] text').all_text_contents()]
    assert labels == ["node-a, slot 1", "node-a, slot 2", "node-b"], labels
    assert frame.locator("table.cost").count() == 1 and frame.locator("table.cost-totals").count() == 0
    assert frame.locator("table.phases tfoot tr.total td").inner_text() == "2 min 30 s"
    frame.locator("h2", has_text="Phases").scroll_into_view_if_needed()
    screenshot(page, "report-tab")


def test_navigation_label_is_whole(page, api_server):
    base, _ = api_server
    page.goto(f"{base}/")
    link = page.get_by_test_id("nav-sidebar").get_by_role("link", name="SciOps", exact=True)
    link.wait_for()
    width, full = link.evaluate("e => [e.clientWidth, e.scrollWidth]")
    assert link.inner_text().strip() == "SciOps" and full <= width


def test_dashboard_charts_each_projects_key_measure_across_runs(page, api_server, screenshot):
    """Nightly drift (issue 33): the median count per run of a project, from run.json's results through the ledger."""
    from sciops.accounting import ledger

    medians = [40.0, 41.0, 39.5, 22.0]   # the last night's stain failed
    for i, med in enumerate(medians):
        ledger.write({"run_id": f"nightly__drift-{i}", "airflow_run_id": f"scheduled__2027-01-0{i + 1}T02:00:00+00:00",
                      "dag_id": "fiji_project", "project": "drift", "status": "success", "params": {},
                      "macro": {"name": "count_nuclei"}, "images": {"total": 10, "ok": 10, "failed": 0},
                      "started_at": T0 + i * 86400, "ended_at": T0 + i * 86400 + 60, "phases": {}, "cost": {},
                      "results": {"key": "count", "measures": {"count": {"n": 10, "median": med}}}})
    base, _ = api_server
    page.goto(f"{base}/sciops/dashboard?project=drift")
    heading = page.locator('h3.measure-project[data-project="drift"]')
    assert heading.inner_text() == "drift: median count (4 run(s))"
    chart = page.locator("svg#measure-chart-0")
    assert chart.count() == 1 and int(chart.get_attribute("data-marks")) == 4
    assert chart.bounding_box()["width"] > 500
    screenshot(page, "measure-drift")


def _reserialize(env: dict) -> None:
    """What the dag-processor does when it parses the DAG file again: the form is drawn from what it stored."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "reserialize"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_trigger_form_lists_the_projects_and_macros(page, api_server, screenshot, tmp_path):
    """project and macro are lists to pick from (the projects under the storage root, the shipped macros and the
    projects' src/*.ijm) that still take a typed name (issue 37, item 3)."""
    import os

    root = tmp_path / "projects"
    for name, macro in (("cells_2026", "seg.ijm"), ("tissue", "ki67_custom.ijm")):
        (root / name / "src").mkdir(parents=True)
        (root / name / "src" / macro).write_text("// a lab macro\n")
    base, token = api_server
    _reserialize({**os.environ, "SCIOPS_STORAGE_ROOT": str(root)})
    try:
        dialog = _open_trigger_form(page, base)
        project = dialog.locator("input[name=element_project]")
        assert project.get_attribute("list") == "list_project"
        options = dialog.locator("datalist#list_project option")
        assert [options.nth(i).get_attribute("value") for i in range(options.count())] == ["cells_2026", "tissue"]
        macros = dialog.locator("datalist#list_macro option")
        offered = [macros.nth(i).get_attribute("value") for i in range(macros.count())]
        assert offered == ["cell_death", "count_nuclei", "ki67_dab", "percent_positive", "src/ki67_custom.ijm",
                           "src/seg.ijm"]
        help_text = dialog.inner_text()
        assert all(m in help_text for m in ("cell_death", "ki67_dab", "percent_positive"))   # the help names them
        project.click()
        screenshot(dialog, "project-list")
        project.fill("typed_in")   # a name not in the list is still taken
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        page.wait_for_url(re.compile(r".*/runs/.*"), timeout=30_000)
        status, runs = _api(base, token, "GET", "/api/v2/dags/fiji_project/dagRuns?order_by=-run_after&limit=5")
        assert any(r["conf"].get("project") == "typed_in" for r in runs["dag_runs"]), runs
    finally:
        _reserialize(dict(os.environ))
