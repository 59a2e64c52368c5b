"""A macro printing in a loop (issue 36, item 3): the task log stops growing at its bound, with a line saying so.

The real task runner runs a macro that prints ~1.5 MB per image under ImageJ 1, with the log's
bound set low for the test (``sciops_node.logcap.TASK_LOG_MAX``: 16 MiB in a run). The log ends
within the bound (plus the runner's notes), says it was cut, and the images still end with a
status; nothing is written outside the run's folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sciops_task as st

from sciops import JOB_DIR
from sciops.imaging.synthetic import make_images
from sciops_node import contract, logcap

pytestmark = pytest.mark.imagej

LOUD_MACRO = r"""// @sciops outputs: results.csv
lines = split(getArgument(), "\n");
output = "";
for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
s = "0123456789012345678901234567890123456789012345678901234567890123456789";
for (i = 0; i < 20000; i++) print("loud line " + i + " " + s);
f = File.open(output + "/results.csv");
print(f, "n");
print(f, "1");
File.close(f);
"""
LIMIT = 256 * 1024


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize("images", [["a.tif"], ["a.tif", "b.tif", "c.tif"]])
def test_task_log_is_bounded(tmp_path, imagej, monkeypatch, images):
    monkeypatch.setattr(logcap, "TASK_LOG_MAX", LIMIT)
    run = tmp_path / "run"
    make_images(run / "input", {name: 1 for name in images}, size=32)
    (run / "macro.ijm").write_text(LOUD_MACRO)
    manifest = {"run_id": "t", "work_dir": str(run / "work"), "run_dir": str(run), "input_dir": str(run / "input"),
                "macro_path": str(run / "macro.ijm"), "driver_path": str(JOB_DIR / "driver.ijm"),
                "chunks": [images], "expected_outputs": ["results.csv"], "launcher": imagej, "memory_mb": 1024,
                "image_timeout_s": 120, "stall_seconds": 60, "macro_args": {}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _files(outside)
    st.main(["--manifest", str(run / "manifest.json"), "--task", "1"])
    log = Path(contract.task_log_path(str(run), 1, 1))
    size = log.stat().st_size
    assert size <= LIMIT + logcap.NOTES_MAX, size
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "the task log reached %d bytes" % LIMIT in text
    statuses = st.read_statuses(st.status_path(str(run / "work"), 1))
    assert set(statuses) == set(images)   # every image still ended with a status
    assert all(os.path.getsize(Path(contract.image_output_dir(str(run / "work"), i)) / "log.txt") < 2_000_000
               for i in images if (Path(contract.image_output_dir(str(run / "work"), i)) / "log.txt").exists())
    assert _files(outside) == before
