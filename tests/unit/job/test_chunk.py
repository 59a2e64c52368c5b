"""sciops_node.chunk: a chunk's books, through the entry script's main() and a fake ImageJ (no JVM)."""
from __future__ import annotations

import json

from sciops_task import main

from sciops_node import contract


def test_runner_with_a_fake_imagej(tmp_path, fake_imagej_run):
    """The bookkeeping against a stand-in JVM: image 'bad' logs an error, 'noout' writes nothing."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "bad.tif", "noout.tif"],
                                  '*bad*) echo \'Exception in thread "main" java.lang.IllegalStateException: boom\' ;;'
                                  '\n    *noout*) ;;')
    assert main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "bad.tif": "failed", "noout.tif": "failed"}
    assert got["bad.tif"]["error"] == 'Exception in thread "main" java.lang.IllegalStateException: boom'
    assert "not written: results.csv" in got["noout.tif"]["error"]
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert summary["imagej_version"] == "9.99z" and summary["exit"] == 0 and summary["jvm_starts"] == 1
    # a second attempt finds everything done and starts no JVM
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    summary2 = json.loads((work / "status" / "task-0001.attempt-2.json").read_text())
    assert summary2["jvm_starts"] == 0


def test_runner_gives_up_when_imagej_cannot_start(tmp_path):
    manifest = {"work_dir": str(tmp_path / "w"), "run_dir": str(tmp_path), "input_dir": str(tmp_path),
                "macro_path": "/m.ijm", "driver_path": "/d.ijm", "chunks": [["a.tif"]],
                "launcher": {"kind": "fiji", "fiji": "/bin/false"}, "memory_mb": 1024,
                "image_timeout_s": 30, "stall_seconds": 10}
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    assert main(["--manifest", str(mpath), "--task", "1"]) == contract.EXIT_IMAGEJ_BROKEN
    assert contract.read_statuses(contract.status_path(manifest["work_dir"], 1)) == {}  # no image blamed


def test_the_image_in_flight_when_the_task_died_goes_last_and_is_blamed_at_the_second_death(
        tmp_path, monkeypatch, fake_imagej_run, died_under, begun):
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_hog.tif", "c.tif", "d.tif"], "")
    died_under(work, "b_hog.tif", 1, done=["a.tif"])
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    assert begun(work, 2) == ["c.tif", "d.tif", "b_hog.tif"]     # the untried images first
    summary = json.loads((work / "status" / "task-0001.attempt-2.json").read_text())
    assert summary["exit"] == 0 and summary["end"] >= summary["start"]

    # died under it twice (attempts 1 and 2): failed without running it a third time
    (tmp_path / "two").mkdir()
    mpath, work = fake_imagej_run(tmp_path / "two", ["a.tif", "b_hog.tif", "c.tif"], "")
    died_under(work, "b_hog.tif", 1, done=["a.tif"])
    died_under(work, "b_hog.tif", 2, done=["c.tif"])
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "3"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert got["b_hog.tif"]["status"] == "failed" and "died while processing this image in 2" in got["b_hog.tif"]["error"]
    assert begun(work, 3) == []

    # ... unless one of the deaths was a lost node: then it runs again
    (tmp_path / "lost").mkdir()
    mpath, work = fake_imagej_run(tmp_path / "lost", ["a.tif", "b_hog.tif"], "")
    died_under(work, "b_hog.tif", 1, done=["a.tif"])
    died_under(work, "b_hog.tif", 2)
    monkeypatch.setenv("SCIOPS_LOST", "7.1:1.2")
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "3"]) == 0
    assert contract.read_statuses(contract.status_path(str(work), 1))["b_hog.tif"]["status"] == "ok"


def test_an_image_is_ok_only_with_whole_tables(tmp_path, fake_imagej_run):
    """Issue 35: a half-written table fails its image with the reason; nothing is padded."""
    cases = r"""*cut*) printf ' ,Area,Mean,X\n1,100,2,3\n102,2\n' > "$out/results.csv" ;;
    *quote*) printf 'Label,Area\n"cell 1",100\n"ce' > "$out/results.csv" ;;
    *header*) printf ' ,Area,Mean\n' > "$out/results.csv" ;;
    *zero*) printf ' ,Area,Mean\n' > "$out/results.csv"; printf 'count,mean_area\n0,NaN\n' > "$out/summary.csv" ;;"""
    images = ["a.tif", "cut.tif", "quote.tif", "header.tif", "zero.tif"]
    mpath, work = fake_imagej_run(tmp_path, images, cases)
    assert main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "cut.tif": "failed", "quote.tif": "failed",
                                                         "header.tif": "failed", "zero.tif": "ok"}
    assert got["cut.tif"]["error"] == "results.csv line 3 has 2 field(s), its header 4 (cut off?)"
    assert "results.csv ends inside a quoted field" in got["quote.tif"]["error"]
    assert "results.csv has no rows, and no summary count of 0" in got["header.tif"]["error"]
    assert got["zero.tif"]["rows"] == 0 and got["a.tif"]["rows"] == 1
    table = (work / "tables" / "task-0001.attempt-1.results.csv").read_text()
    assert table == "image,task,attempt,count\na.tif,1,1,1\n"      # no padded row of a failed image
