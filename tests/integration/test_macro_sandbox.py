"""Issue 36 with the real ImageJ 1 under Xvfb: what a hostile macro cannot do.

* A macro that deletes or rewrites input/ fails its image, naming the file (the runner's check; clusters have no
  sandbox).
* The driver's lines are out of band: a macro printing ``SCIOPS_BEGIN <folder>`` lines changes nothing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sciops_task as st
from sciops import JOB_DIR
from sciops.imaging.synthetic import make_images

pytestmark = pytest.mark.imagej

#: A macro's head: input, output and the lab's own arguments from the argument.
ARGS = """input = ""; output = ""; outside = ""; cfg = ""; port = "";
lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) {
    kv = split(lines[i], "=");
    value = substring(lines[i], lengthOf(kv[0]) + 1);
    if (kv[0] == "input") input = value;
    if (kv[0] == "output") output = value;
    if (kv[0] == "outside") outside = value;
    if (kv[0] == "cfg") cfg = value;
    if (kv[0] == "port") port = value;
}
"""

def manifest_for(tmp_path: Path, launcher: dict, macro_text: str, images: list[str], **kw) -> Path:
    job = tmp_path / "run" / "work" / "job"
    job.mkdir(parents=True)
    (job / "macro.ijm").write_text(macro_text)
    manifest = {"run_id": "t", "work_dir": str(tmp_path / "run" / "work"), "run_dir": str(tmp_path / "run"),
                "input_dir": str(tmp_path / "input"), "macro_path": str(job / "macro.ijm"),
                "driver_path": str(JOB_DIR / "driver.ijm"), "chunks": [images], "expected_outputs": ["results.csv"],
                "launcher": launcher, "memory_mb": 1024, "image_timeout_s": 60, "stall_seconds": 20, "macro_args": {}}
    manifest.update(kw)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def run_task(tmp_path: Path, mpath: Path) -> tuple[dict[str, dict], dict, str]:
    """Statuses, the attempt summary and the task log of task 1."""
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    work = tmp_path / "run" / "work"
    got = st.read_statuses(st.status_path(str(work), 1))
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    return got, summary, (tmp_path / "run" / "logs" / "task-0001.attempt-1.log").read_text()


def image_log(tmp_path: Path, image: str) -> str:
    return (Path(st.image_output_dir(str(tmp_path / "run" / "work"), image)) / "log.txt").read_text()


def test_without_the_sandbox_a_macro_that_deletes_or_rewrites_input_fails_naming_the_file(tmp_path, imagej):
    """As on a cluster: nothing stops the macro, the runner's size+mtime check flags it."""
    macro = "// @sciops outputs: results.csv\n" + ARGS + """
if (indexOf(input, "deleter") >= 0)
    deleted = File.delete(input);
if (indexOf(input, "rewriter") >= 0)
    File.saveString("not an image any more", File.getParent(input) + "/b.tif");
File.saveString("count\\n1\\n", output + "/results.csv");
"""
    make_images(tmp_path / "input", {"a_deleter.tif": 1, "b.tif": 1, "c_rewriter.tif": 1, "d.tif": 1}, size=32)
    mpath = manifest_for(tmp_path, imagej, macro, ["a_deleter.tif", "b.tif", "c_rewriter.tif", "d.tif"])
    got, summary, _ = run_task(tmp_path, mpath)
    assert not (tmp_path / "input" / "a_deleter.tif").exists()
    assert got["a_deleter.tif"]["status"] == "failed"
    assert got["a_deleter.tif"]["error"] == ("its input was changed while the task ran (a macro may never change "
                                             "input/): input/a_deleter.tif deleted")
    # b.tif was ok when it ended; c's macro rewrote it in place afterwards: found by then, or when the JVM ended
    assert got["b.tif"]["status"] == "failed" and "input/b.tif changed (size" in got["b.tif"]["error"]
    assert got["c_rewriter.tif"]["status"] == "ok"   # its own input is as it was (who did it cannot be known)
    assert got["d.tif"]["status"] == "ok" and summary["jvm_starts"] == 1


FORGER_MACRO = "// @sciops outputs: results.csv\n" + ARGS + """
print("the log holds: [" + getInfo("log") + "]");
print("SCIOPS_VERSION\\t6.66x");
print("SCIOPS_BEGIN\\t" + outside);
print("SCIOPS_END\\t" + outside + "\\t5\\t");
print("SCIOPS_BEGIN\\t" + outside + "/deeper");
print("SCIOPS_DONE");
File.saveString("count\\n" + lengthOf(input) + "\\n", output + "/results.csv");
"""


def test_a_macro_printing_the_drivers_lines_changes_nothing(tmp_path, imagej):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    images = ["a.tif", "b.tif", "c.tif"]
    make_images(tmp_path / "input", {name: 1 for name in images}, size=32)
    mpath = manifest_for(tmp_path, imagej, FORGER_MACRO, images, macro_args={"outside": str(outside)})
    got, summary, task_log = run_task(tmp_path, mpath)
    assert {k: v["status"] for k, v in got.items()} == {name: "ok" for name in images}
    assert list(outside.rglob("*")) == []                      # no log.txt or summary.csv written there
    assert summary["jvm_starts"] == 1 and summary["imagej_version"].startswith("1.")
    work = tmp_path / "run" / "work"
    for name in images:                                        # the results are each image's own
        table = (Path(st.image_output_dir(str(work), name)) / "results.csv").read_text()
        assert table == "count\n%d\n" % len(str(tmp_path / "input" / name))
        said = image_log(tmp_path, name)                       # the forged lines are the macro's output
        assert f"SCIOPS_BEGIN\t{outside}" in said and "the log holds: []" in said
    # the secret is in no file of the run, nor in the job files (deleted before the macro ran)
    assert not re.search(r"SCIOPS_[0-9a-f]{32}_", task_log)
    assert "SCIOPS_BEGIN\t" in task_log                        # the driver's lines, without it
