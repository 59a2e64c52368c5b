"""report.html in headless Chromium (Debian's, through Playwright): it renders offline, with its charts."""
from __future__ import annotations

import json
import re

import pytest

T0 = 1_800_000_000.0
#: Phases as record collects them (alphabetically, from phases/*.json), starting in another order.
PHASES = {"collate": 120.0, "plan": 6.0, "record": 130.0, "run_array": 7.0, "stage_in": 5.0, "validate": 0.0}


def _run_dir(root, tasks):
    work = root / "work" / "status"
    work.mkdir(parents=True)
    for task, host, start, secs, exit_code, attempt in tasks:
        (work / f"task-{task:04d}.attempt-{attempt}.json").write_text(json.dumps(
            {"task": task, "attempt": attempt, "host": host, "start": T0 + start, "end": T0 + start + secs,
             "exit": exit_code, "images": 2}))
    (root / "summary.csv").write_text("image,count,seconds\n" + "".join(
        f"img{i}.tif,{i},{0.5 + (i % 7) * 0.3:.2f}\n" for i in range(40)))
    (root / "failures.csv").write_text("image,task,attempt,status,error\nbad.tif,3,2,failed,Unsupported format\n")
    return root


def _doc(**over):
    doc = {"run_id": "manual__2027-01-15T08-00-00-00-00", "airflow_run_id": "manual__2027-01-15T08:00:00+00:00",
           "project": "cells", "dag_run_started": T0 - 10.0, "recorded_at": T0 + 140.0, "status": "success",
           "macro": {"name": "count_nuclei"},
           "params": {"backend": "existing"}, "images": {"ok": 40, "failed": 1, "total": 41},
           "cost": {"kind": "hourly_rate", "hourly_rate_usd": 2.0,
                    "node_hours": {"task-hours on node-a": 0.02, "task-hours on node-b": 0.01},
                    "compute_usd": 0.06, "storage_usd": 0.0, "total_usd": 0.06},
           "cost_per_image_usd": 0.0015,
           "phases": {k: {"seconds": 1.5, "status": "success", "start": T0 + v, "end": T0 + v + 1.5}
                      for k, v in PHASES.items()}}
    return {**doc, **over}


def _ticks(page, chart: str) -> list[str]:
    return [t.strip() for t in page.locator(f'#{chart} g[id^="xtick"] text').all_text_contents()]


@pytest.mark.parametrize("tasks,name,rows", [
    (((1, "node-a", 0, 40, 0, 1), (2, "node-b", 2, 35, 0, 1), (3, "node-a", 41, 30, 137, 1),
      (3, "node-b", 80, 28, 0, 2)), "two-minutes", ["node-a", "node-b"]),
    # ticks once read "0 s 1 s 1 s 2 s"; the second of two tasks at once on a node once read "-"
    (((1, "node-a", 0, 1.1, 0, 1), (2, "node-a", 0.4, 1.9, 0, 1)), "two-seconds", ["node-a, slot 1", "node-a, slot 2"]),
])
def test_report_renders_in_headless_chromium(tmp_path, browser, screenshot, tasks, name, rows):
    from sciops.reporting import report

    run_dir = _run_dir(tmp_path / "run", tasks)
    path = report.write(run_dir, _doc())
    text = path.read_text()
    assert not re.search(r"""(src|href)=["']https?://""", text)  # self-contained: nothing fetched
    page = browser.new_page(viewport={"width": 1000, "height": 1400})
    page.goto(path.as_uri())
    assert page.locator("body").get_attribute("data-rendered") == "yes"  # the page's script ran
    for chart, marks in (("timeline", len(tasks)), ("histogram", 5)):
        svg = page.locator(f"svg#{chart}")
        box = svg.bounding_box()
        assert box["width"] > 500 and box["height"] > 50, (chart, box)
        assert int(svg.get_attribute("data-marks")) >= marks
    ticks = _ticks(page, "timeline")
    values = [float(t.replace("\u2212", "-")) for t in ticks]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks) and values == sorted(values), ticks
    # titled with Airflow's own run id, not the folder's name
    assert page.locator("h1").inner_text() == "SciOps run manual__2027-01-15T08:00:00+00:00 — cells"
    # phases in the order they ran, not alphabetically, and with Airflow's time between them they make the wall time
    phases = page.locator("table.phases tbody tr td:first-child").all_text_contents()
    assert phases == sorted(PHASES, key=PHASES.get), phases
    assert page.locator("table.phases tbody tr td:nth-child(3)").all_text_contents() == ["1.5 s"] * len(PHASES)
    foot = [r.locator("th, td").all_text_contents() for r in page.locator("table.phases tfoot tr").all()]
    # 150 s from the DAG run's start to record's; six phases of 1.5 s, stage_in, plan and run_array overlapping by
    # 0.5 s twice: 8 s in phases, 142 s Airflow's
    assert foot == [["Airflow, outside the phases (grey above)", "2 min 22 s"],
                    ["wall time, from when Airflow's DAG run started to this report", "2 min 30 s"]], foot
    assert "overlap by 1.0 s" in page.locator("#phases-overlap").inner_text()
    # a bar a phase, and one a gap: before validate, after it, after run_array, after collate, after record
    assert int(page.locator("svg#phases-chart").get_attribute("data-marks")) == len(PHASES) + 5
    # every row of the task timeline labelled
    labels = [t.strip() for t in page.locator('#timeline g[id^="ytick"] text').all_text_contents()]
    assert labels == rows, labels
    # no empty cell anywhere: an hourly rate prices each host's task-hours
    cells = page.locator("td").all_text_contents()
    assert cells and all(c.strip() for c in cells), cells
    usd = page.locator("table.cost tbody tr td:last-child").all_text_contents()
    assert usd == ["0.04", "0.02"], usd
    # one cost table: the items, then what they add up to
    assert page.locator("table.cost").count() == 1 and page.locator("table.cost-totals").count() == 0
    totals = [r.locator("th, td").all_text_contents() for r in page.locator("table.cost tfoot tr").all()]
    assert totals == [["compute", "0.06"], ["storage", "0.0"], ["total", "0.06"], ["per image (ok)", "0.0015"]], totals
    assert page.get_by_text("Unsupported format").count() == 1
    screenshot(page, name)
    page.close()


def test_a_big_run_draws_tasks_per_node_and_time_and_lists_the_first_failures(tmp_path, browser):
    """4,000 task attempts: a heat map of tasks running per node, not a bar each; failures capped."""
    from sciops.reporting import charts
    from sciops.reporting import report

    n = charts.TIMELINE_DETAIL_MAX + 100
    tasks = [(t, f"node-{t % 20:02d}", (t // 20) * 30.0, 28.0, 0 if t % 50 else 137, 1) for t in range(1, n + 1)]
    run_dir = _run_dir(tmp_path / "run", tasks)
    (run_dir / "failures.csv").write_text("image,task,attempt,status,error\n" + "".join(
        f"bad{i}.tif,{i},1,failed,Unsupported format\n" for i in range(report.TABLE_ROWS_MAX + 7)))
    path = report.write(run_dir, _doc())
    page = browser.new_page(viewport={"width": 1000, "height": 1400})
    page.goto(path.as_uri())
    svg = page.locator("svg#timeline")
    assert svg.get_attribute("data-rendered-marks") == str(n)
    assert svg.get_attribute("aria-label") == "Array tasks running per node"
    assert "20 node(s)" in " ".join(page.locator("svg#timeline text").all_text_contents())
    assert page.locator("table.failures tbody tr").count() == report.TABLE_ROWS_MAX
    assert page.locator("p.more.failures").inner_text() == "… and 7 more in failures.csv."
