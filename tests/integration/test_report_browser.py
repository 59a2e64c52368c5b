"""report.html in headless Chromium (Debian's chromium): it renders offline, with its charts."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

T0 = 1_800_000_000.0


@pytest.fixture
def run_dir(tmp_path):
    work = tmp_path / "run" / "work" / "status"
    work.mkdir(parents=True)
    for task, host, start, secs, exit_code, attempt in ((1, "node-a", 0, 40, 0, 1), (2, "node-b", 2, 35, 0, 1),
                                                        (3, "node-a", 41, 30, 137, 1), (3, "node-b", 80, 28, 0, 2)):
        (work / f"task-{task:04d}.attempt-{attempt}.json").write_text(json.dumps(
            {"task": task, "attempt": attempt, "host": host, "start": T0 + start, "end": T0 + start + secs,
             "exit": exit_code, "images": 2}))
    run = tmp_path / "run"
    (run / "summary.csv").write_text("image,count,seconds\n" + "".join(
        f"img{i}.tif,{i},{0.5 + (i % 7) * 0.3:.2f}\n" for i in range(40)))
    (run / "failures.csv").write_text("image,task,attempt,status,error\nbad.tif,3,2,failed,Unsupported format\n")
    return run


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from sciops import report

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/test.sh installs Debian's chromium"
    doc = {"run_id": "manual__r1", "project": "cells", "status": "success", "macro": {"name": "count_nuclei"},
           "params": {"backend": "existing"}, "images": {"ok": 40, "failed": 1, "total": 41},
           "cost": {"kind": "hourly_rate", "hourly_rate_usd": 2.0, "node_hours": {"task-hours on node-a": 0.02},
                    "compute_usd": 0.04, "storage_usd": 0.0, "total_usd": 0.04},
           "cost_per_image_usd": 0.001, "phases": {"validate": {"seconds": 3.2, "status": "success"}}}
    path = report.write(run_dir, doc)
    text = path.read_text()
    assert not re.search(r"""(src|href)=["']https?://""", text)  # self-contained: nothing fetched
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1800"]
    shot = tmp_path / "report.png"
    proc = subprocess.run(args + [f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(args + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-rendered="yes"' in dom  # the page's script ran
    for chart, marks in (("timeline", 4), ("histogram", 20)):
        tag = re.search(rf'<svg[^>]*id="{chart}"[^>]*>', dom).group(0)
        width = int(re.search(r'data-rendered-width="(\d+)"', tag).group(1))
        height = int(re.search(r'data-rendered-height="(\d+)"', tag).group(1))
        assert width > 500 and height > 50, (chart, width, height)
        assert int(re.search(r'data-rendered-marks="(\d+)"', tag).group(1)) >= marks
    assert "Unsupported format" in dom and "node-b" in dom and "0.04" in dom
