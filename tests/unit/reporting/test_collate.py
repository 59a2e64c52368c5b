"""Collation: every image ends in exactly one of summary.csv or failures.csv."""
from __future__ import annotations

import json

import pandas as pd
import sciops_task as st

from sciops.reporting.collate import collate


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
    return {"run_dir": str(work.parent), "work_dir": str(work), "chunks": chunks}


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
    from sciops.reporting.collate import scheduler_says

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sciops-r1.42.3.err").write_text("slurmstepd: error: Job 42 exceeded memory limit (1200000 > 1048576)\n")
    (logs / "sciops-r1.e43.2").write_text("nothing to see\n")
    assert scheduler_says(logs, "42", 3, [1, 2, 3]) == "exceeded memory limit"
    assert scheduler_says(logs, "43", 5, [4, 5]) == ""


# -- chunk tables: the runner's own writer, and the per-image reference ---------------------------

def runner(tmp_path, chunks, task, attempt):
    """A task runner of the real module, fed images by hand (no JVM): its tables and status lines."""
    import io

    manifest = {"work_dir": str(tmp_path / "work"), "chunks": chunks, "run_dir": str(tmp_path)}
    return st.ChunkRunner(manifest, task, attempt, io.StringIO())


def process(r, image, outputs, status="ok", error=""):
    out = tmp = st.image_output_dir(r.work, image)
    import os

    os.makedirs(out, exist_ok=True)
    for name, text in outputs.items():
        with open(os.path.join(tmp, name), "w") as fh:
            fh.write(text)
    r.begin(image)
    return r.judge(image, 1.25, []) if status == "ok" else r.record(image, status, 1.25, error)


def as_read(df):
    """A table as a user reads it back from CSV (so dtypes compare as the file says them)."""
    import io

    buf = io.StringIO()
    df.to_csv(buf, index=False)
    buf.seek(0)
    return pd.read_csv(buf)


def assert_same_as_reference(tmp_path, manifest):
    from sciops.reporting.collate import reference_tables

    ref_results, ref_summary = reference_tables(tmp_path, manifest)
    results = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(results, as_read(ref_results), check_dtype=False)
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    pd.testing.assert_frame_equal(as_read(parquet), results, check_dtype=False)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.pop("qc_overlay").isna().all() and summary.pop("qc_drawn").isna().all()   # collation's own
    # columns: these runners drew no overlay
    pd.testing.assert_frame_equal(summary, as_read(pd.DataFrame(ref_summary)), check_dtype=False)
    return results, summary


RESULTS_A = " ,Area,Mean\n1,10,5\n2,20,6.5\n"
SUMMARY = "count,mean_area\n{n},{a}\n"


def test_chunk_tables_match_the_per_image_read_through_resubmissions_failures_and_odd_columns(tmp_path):
    chunks = [["a.tif", "b.tif", "c.tif", "d.tif"], ["e.tif", "f.tif", "1234"], ["g.tif"]]
    manifest = {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks}
    r1 = runner(tmp_path, chunks, 1, 1)
    process(r1, "a.tif", {"results.csv": RESULTS_A, "summary.csv": SUMMARY.format(n=2, a=15)})
    process(r1, "b.tif", {"results.csv": "", "summary.csv": SUMMARY.format(n=0, a="NaN")})    # empty results
    r1.begin("c.tif")   # the task dies here; attempt 2 does c and d
    r2 = runner(tmp_path, chunks, 1, 2)
    assert set(r2.already_done()) == {"a.tif", "b.tif"}
    process(r2, "d.tif", {"results.csv": " ,Area,Mean,Label\n1,7,1,x\n",           # one more column
                          "summary.csv": SUMMARY.format(n=1, a=7)})
    process(r2, "c.tif", {"results.csv": " ,Area,Mean\n1,3.5,2\n", "summary.csv": SUMMARY.format(n=1, a=3.5)})
    r3 = runner(tmp_path, chunks, 2, 1)
    process(r3, "e.tif", {"results.csv": " ,Area,Mean\n1,oops,2\n", "summary.csv": "count\n1\n"})  # text in a number column
    process(r3, "f.tif", {"results.csv": RESULTS_A}, status="failed", error="Macro Error")
    process(r3, "1234", {"results.csv": " ,Area,image\n1,4,inner\n", "summary.csv": "count,seconds\n1,99\n"})
    c = collate(tmp_path, manifest)
    assert (c.images, c.ok, c.failed, c.result_rows) == (8, 6, 2, 6)
    results, summary = assert_same_as_reference(tmp_path, manifest)
    assert list(results.columns) == ["image", "task", "attempt", "Area", "Mean", "Label", "macro_image"]
    assert list(results["image"]) == ["a.tif", "a.tif", "c.tif", "d.tif", "e.tif", "1234"]   # manifest order
    assert list(results[results.image == "c.tif"]["attempt"]) == [2]                        # the final attempt
    assert list(results["Area"].astype(str)) == ["10", "20", "3.5", "7", "oops", "4"]       # text wins
    assert list(summary["image"]) == ["a.tif", "b.tif", "c.tif", "d.tif", "e.tif", "1234"]
    assert list(summary["n_results"]) == [2, 0, 1, 1, 1, 1] and summary.loc[5, "seconds"] == 1.25
    failures = pd.read_csv(tmp_path / "failures.csv").set_index("image")
    assert failures.loc["f.tif", "error"] == "Macro Error" and failures.loc["g.tif", "status"] == "not_run"


def test_a_resubmitted_chunk_is_never_counted_twice(tmp_path):
    chunks = [["a.tif", "b.tif"]]
    r1 = runner(tmp_path, chunks, 1, 1)
    process(r1, "a.tif", {"results.csv": RESULTS_A})
    # attempt 1 dies after writing b's rows but before its status line: attempt 2 writes them again
    r1.tables["results"].append(["image", "task", "attempt", "Area", "Mean"], [["b.tif", "1", "1", "1", "1"]])
    r2 = runner(tmp_path, chunks, 1, 2)
    process(r2, "b.tif", {"results.csv": " ,Area,Mean\n1,2,2\n"})
    c = collate(tmp_path, {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks})
    assert c.result_rows == 3
    results, _ = assert_same_as_reference(tmp_path, {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks})
    assert list(zip(results["image"], results["attempt"])) == [("a.tif", 1), ("a.tif", 1), ("b.tif", 2)]


def test_a_chunk_file_cut_short_is_rerun_by_the_next_attempt_or_reported(tmp_path):
    import os

    chunks = [["a.tif", "b.tif", "c.tif"]]
    manifest = {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks}
    r1 = runner(tmp_path, chunks, 1, 1)
    for image in chunks[0]:
        process(r1, image, {"results.csv": RESULTS_A, "summary.csv": SUMMARY.format(n=2, a=15)})
    path = tmp_path / "work" / "tables" / "task-0001.attempt-1.results.csv"
    whole = path.stat().st_size
    with open(path, "r+b") as fh:       # the node went down before c's rows (and half of b's) reached the disk
        fh.truncate(whole - len("c.tif,1,1,10,5\nc.tif,1,1,20,6.5\n") - 7)
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed) == (1, 2)
    failures = pd.read_csv(tmp_path / "failures.csv").set_index("image")
    assert set(failures.index) == {"b.tif", "c.tif"}
    assert "results rows were cut short: tables/task-0001.attempt-1.results.csv has" in failures.loc["b.tif", "error"]
    assert list(pd.read_csv(tmp_path / "results.csv")["image"]) == ["a.tif", "a.tif"]   # b's whole rows not kept
    # had the task run again, its runner would have redone exactly those two
    assert set(runner(tmp_path, chunks, 1, 2).already_done()) == {"a.tif"}
    os.remove(path)
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed) == (0, 3)
    assert "has no file" in pd.read_csv(tmp_path / "failures.csv")["error"][0]


def test_progress_counts_come_from_one_small_file_per_task(tmp_path):
    from sciops.arrays.workdir import images_done

    chunks = [["a.tif", "b.tif"], ["c.tif"]]
    r1 = runner(tmp_path, chunks, 1, 1)
    process(r1, "a.tif", {"results.csv": RESULTS_A})
    process(r1, "b.tif", {}, status="timeout", error="slow")
    count = json.loads((tmp_path / "work" / "status" / "task-0001.count.json").read_text())
    assert (count["images"], count["done"], count["ok"]) == (2, 2, 1)
    assert images_done(tmp_path / "work") == 2


def _garble(path, old: bytes, new: bytes):
    """Replace bytes of a chunk file in place (same length: the other images' byte ranges stay right)."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_collate_rechecks_the_chunk_tables_and_never_pads_a_row(tmp_path):
    """Issue 35: an ok image whose rows in a chunk table are not whole goes to failures.csv with the reason,
    and none of its rows is kept; the other images of the same file are collated as usual."""
    chunks = [["a.tif", "b.tif", "c.tif", "d.tif", "e.tif", "f.tif"]]
    manifest = {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks}
    r1 = runner(tmp_path, chunks, 1, 1)
    for image in chunks[0]:
        name = image[0]
        process(r1, image, {"results.csv": f" ,Area,Mean\n1,{name}10,5\n2,{name}20,6.5\n",
                            "summary.csv": SUMMARY.format(n=2, a=15)})
    path = tmp_path / "work" / "tables" / "task-0001.attempt-1.results.csv"
    _garble(path, b"b.tif,1,1,b20,6.5\n", b"b.tif,1,1,b20;6.5\n")    # a row short of a field
    _garble(path, b"c.tif,1,1,c20,6.5\n", b'c.tif,1,1,c20,"6.\n')    # a quoted field left open
    _garble(path, b"d.tif,1,1,d20,6.5\n", b"d.tif,1,1,d20,6.55")     # no line break at its end
    _garble(path, b"e.tif,1,1,e20,6.5\n", b"x.tif,1,1,e20,6.5\n")    # a row that is no image's: e has one row
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed, c.result_rows) == (2, 4, 4)
    failures = pd.read_csv(tmp_path / "failures.csv").set_index("image")["error"].to_dict()
    assert set(failures) == {"b.tif", "c.tif", "d.tif", "e.tif"}
    assert failures["b.tif"].startswith("its results rows in tables/task-0001.attempt-1.results.csv are malformed: "
                                        "CSV parse error: Expected 5 columns, got 4")
    assert failures["c.tif"].endswith("hold a quoted field that is never closed: not whole")
    assert failures["d.tif"].endswith("do not end at a line break: not whole")
    assert failures["e.tif"] == ("its results rows do not match its status line: 1 in "
                                 "tables/task-0001.attempt-1.results.csv, the runner recorded 2")
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["image"]) == ["a.tif", "a.tif", "f.tif", "f.tif"] and not results.isna().any().any()
    assert list(pd.read_csv(tmp_path / "summary.csv")["image"]) == ["a.tif", "f.tif"]


def test_collate_reads_an_older_runners_image_files_strictly(tmp_path):
    """An ok line without chunk tables (a runner older than them): its image's own files, read strictly."""
    chunks = [["a.tif", "b.tif"]]
    manifest = setup_run(tmp_path, chunks, {"a.tif": {"status": "ok"}, "b.tif": {"status": "ok"}},
                         {"a.tif": {"results.csv": " ,Area,Mean\n1,10,5\n"},
                          "b.tif": {"results.csv": " ,Area,Mean\n1,10,5\n102,2\n"}})
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed, c.result_rows) == (1, 1, 1)
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert failures.loc[0, "error"] == "results.csv line 3 has 2 field(s), its header 3 (cut off?)"


def test_collate_refuses_rows_under_a_header_without_its_image_column(tmp_path):
    chunks = [["a.tif"], ["b.tif"]]
    manifest = {"run_dir": str(tmp_path), "work_dir": str(tmp_path / "work"), "chunks": chunks}
    for task, image in ((1, "a.tif"), (2, "b.tif")):
        process(runner(tmp_path, chunks, task, 1), image, {"results.csv": RESULTS_A})
    _garble(tmp_path / "work" / "tables" / "task-0002.attempt-1.results.csv", b"image,task", b"imagf,task")
    c = collate(tmp_path, manifest)
    assert (c.ok, c.failed, c.result_rows) == (1, 1, 2)
    error = pd.read_csv(tmp_path / "failures.csv").set_index("image").loc["b.tif", "error"]
    assert error.startswith("its results rows are in tables/task-0002.attempt-1.results.csv, whose header lacks the "
                            "image column")
