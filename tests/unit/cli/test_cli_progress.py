"""sciops.cli.progress: a run's phase, images done/failed, ETA and spend, read from its run folder."""
from __future__ import annotations

import json
import time

import pytest

from sciops.cli.progress import run_folder, run_progress

RUN_ID = "manual__2026-12-01T10:00:00+00:00"
FOLDER = "manual__2026-12-01T10-00-00-00-00"   # safe_run_id(RUN_ID)


@pytest.fixture
def work(storage):
    """The run folder's work/ of project ``cells`` in a folder storage root."""
    work = storage / "cells" / "output" / FOLDER / "work"
    (work / "phases").mkdir(parents=True)
    (work / "status").mkdir()
    return work


def _write(path, doc):
    path.write_text(json.dumps(doc))


def _task(work, task, done, ok, start, seconds):
    (work / "status" / f"task-{task:04d}.jsonl").write_text("")
    _write(work / "status" / f"task-{task:04d}.count.json", {"done": done, "ok": ok})
    _write(work / "status" / f"task-{task:04d}.attempt-1.json",
           {"task": task, "attempt": 1, "host": "node-a", "start": start, "end": start + seconds})


def test_a_running_array(work):
    now = time.time()
    _write(work / "phases" / "validate.json", {"phase": "validate", "status": "success", "start": now - 300})
    _write(work / "phases" / "run_array.json", {"phase": "run_array", "status": "running", "start": now - 100})
    _write(work / "plan.json", {"images": 10, "budget": {"task_rate_usd_per_hour": 3.6}})
    _task(work, 1, done=3, ok=3, start=now - 100, seconds=600)
    _task(work, 2, done=1, ok=0, start=now - 100, seconds=400)
    got = run_progress({"project": "cells"}, RUN_ID)
    assert {k: got[k] for k in ("phase", "images", "done", "ok", "failed")} == \
        {"phase": "run_array", "images": 10, "done": 4, "ok": 3, "failed": 1}
    assert got["eta_s"] == pytest.approx(100 / 4 * 6, rel=0.05)    # the array's pace over the images left
    assert got["spent_usd"] == pytest.approx(1000 / 3600 * 3.6)      # task-hours × the rate


def test_a_run_planned_before_plan_json_and_the_rate_from_its_conf(work):
    _write(work / "phases" / "plan.json", {"phase": "plan", "status": "success", "start": 5})
    _write(work / "phases" / "collate.json", {"phase": "collate", "status": "success", "start": 9})
    _write(work / "manifest.json", {"run_dir": str(work.parent), "work_dir": str(work),
                                    "chunks": [["a.tif", "b.tif"], ["c.tif"]]})
    _task(work, 1, done=3, ok=3, start=1000, seconds=1800)
    got = run_progress({"project": "cells", "hourly_rate_usd": 2}, RUN_ID)
    assert got == {"phase": "collate", "images": 3, "ok": 3, "done": 3, "failed": 0, "spent_usd": 1.0}


def test_what_the_folder_does_not_show_is_left_out(work):
    _write(work / "phases" / "validate.json", {"phase": "validate", "status": "running", "start": 1})
    (work / "phases" / "broken.json").write_text("{")
    assert run_progress({"project": "cells"}, RUN_ID) == {"phase": "validate"}   # no plan yet


@pytest.mark.parametrize("conf,run_id", [({}, RUN_ID), ({"project": 7}, RUN_ID), ({"project": "cells"}, "other"),
                                         ({"project": "cells", "storage_root": "/not/allowed"}, RUN_ID)])
def test_no_run_folder_no_progress(work, conf, run_id):
    assert run_folder(conf, run_id) is None and run_progress(conf, run_id) == {}
    assert run_folder({"project": "cells"}, RUN_ID) == work.parent


def test_before_the_plan_the_total_is_the_matching_input_images(storage):
    """``sciops run --wait`` shows done/total from the start: the input's matching images until plan.json."""
    (storage / "cells" / "input" / "sub").mkdir(parents=True)
    for name in ("a.tif", "b.TIF", "sub/c.tif", "notes.txt", ".hidden.tif"):
        (storage / "cells" / "input" / name).write_bytes(b"x")
    assert run_progress({"project": "cells"}, RUN_ID) == {"images": 3, "done": 0}
    assert run_progress({"project": "cells", "file_pattern": "*.txt"}, RUN_ID) == {"images": 1, "done": 0}
    (storage / "cells" / "project.yaml").write_text("file_pattern: 'sub/*'\n")
    assert run_progress({"project": "cells"}, RUN_ID) == {"images": 1, "done": 0}
    work = storage / "cells" / "output" / FOLDER / "work"
    (work / "phases").mkdir(parents=True)
    _write(work / "phases" / "validate.json", {"phase": "validate", "status": "running", "start": time.time()})
    assert run_progress({"project": "cells"}, RUN_ID) == {"phase": "validate", "images": 1, "done": 0}
