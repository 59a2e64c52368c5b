"""Collation: every image ends in exactly one of summary.csv or failures.csv."""
from __future__ import annotations

import json

import pandas as pd
import sciops_task as st

from sciops.results import collate


def setup_run(tmp_path, chunks, statuses, outputs, attempts=None):
    work = tmp_path / "work"
    for image, rec in statuses.items():
        task = next(i for i, c in enumerate(chunks, 1) if image in c)
        st.append_status(st.status_path(str(work), task), {"image": image, "task": task, "attempt": 1,
                                                           "seconds": 1.5, "error": "", **rec})
    for image, files in outputs.items():
        out = tmp_path / "work" / "images" / image
        out.mkdir(parents=True)
        for name, text in files.items():
            (out / name).write_text(text)
    if attempts is not None:
        (work / "attempts.json").write_text(json.dumps(attempts))
    return {"work_dir": str(work), "chunks": chunks}


def test_collate_ok_failed_and_not_run(tmp_path):
    chunks = [["a.tif", "b.tif"], ["c.tif", "sub/d.tif"], ["e.tif"]]
    manifest = setup_run(
        tmp_path, chunks,
        statuses={"a.tif": {"status": "ok"}, "b.tif": {"status": "failed", "error": "File not found"},
                  "c.tif": {"status": "timeout", "error": "no result"}, "sub/d.tif": {"status": "ok"}},
        outputs={"a.tif": {"results.csv": " ,Area,Mean\n1,10,5\n2,20,6\n", "summary.csv": "count,mean_area\n2,15\n"},
                 "sub/d.tif": {"results.csv": "", "summary.csv": "count,mean_area\n0,NaN\n"}},
        attempts=[{"attempt": 3, "job_id": "7", "tasks": [3],
                   "accounting": {"3": {"state": "failed", "reason": "killed by signal 9"}}}],
    )
    c = collate(tmp_path, manifest)
    assert (c.images, c.ok, c.failed, c.result_rows) == (5, 2, 3, 2)
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results.columns) == ["image", "task", "attempt", "Area", "Mean"]
    assert pd.read_parquet(tmp_path / "results.parquet").equals(results)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["image"]) == ["a.tif", "sub/d.tif"]
    assert list(summary["count"]) == [2, 0] and list(summary["n_results"]) == [2, 0]
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert dict(zip(failures["image"], failures["status"])) == {"b.tif": "failed", "c.tif": "timeout",
                                                                "e.tif": "not_run"}
    assert "killed by signal 9" in failures.set_index("image").loc["e.tif", "error"]
    assert set(summary["image"]) | set(failures["image"]) == {i for c in chunks for i in c}


def test_collate_nothing_ok(tmp_path):
    manifest = setup_run(tmp_path, [["a.tif"]], {"a.tif": {"status": "failed", "error": "x"}}, {})
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed) == (0, 1)
    assert pd.read_csv(tmp_path / "summary.csv").empty
    assert list(pd.read_csv(tmp_path / "results.csv").columns) == ["image", "task", "attempt"]


def test_scheduler_words_reach_failures(tmp_path):
    from sciops.results import scheduler_says

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sciops-r1.42.3.err").write_text("slurmstepd: error: Job 42 exceeded memory limit (1200000 > 1048576)\n")
    (logs / "sciops-r1.e43.2").write_text("nothing to see\n")
    assert scheduler_says(logs, "42", 3, [1, 2, 3]) == "exceeded memory limit"
    assert scheduler_says(logs, "43", 5, [4, 5]) == ""
