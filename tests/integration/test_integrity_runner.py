"""Issue 35 with the real ImageJ 1 under Xvfb: never a wrong number passed off as a result.

An image is ``ok`` only when its outputs are whole (tables read strictly), ImageJ said nothing that means a
failure (out of memory, a dialog, an exception), and a printed word of the macro's own never fails it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import runner_manifest
import sciops_task as st

from sciops import JOB_DIR
from sciops.imaging.synthetic import make_images

pytestmark = pytest.mark.imagej

#: A macro's head: input and output from the argument.
ARGS = """input = ""; output = "";
lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) {
    if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);
    if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
}
"""

#: Each image's name says which half-written table its macro leaves.
TABLES_MACRO = "// @sciops outputs: results.csv\n" + ARGS + """
if (indexOf(input, "_cut.") >= 0)          // the last row cut off
    File.saveString(" ,Area,Mean,X\\n1,100,2,3\\n102,2\\n", output + "/results.csv");
else if (indexOf(input, "_quote.") >= 0)   // a field cut inside its quotes
    File.saveString("Label,Area\\n\\"cell 1\\",100\\n\\"ce", output + "/results.csv");
else if (indexOf(input, "_header.") >= 0)  // a header alone, and nothing that says there was nothing to count
    File.saveString(" ,Area,Mean\\n", output + "/results.csv");
else if (indexOf(input, "_oom.") >= 0) {   // ImageJ runs out of memory, the macro carries on and counts 0
    newImage("big", "8-bit black", 20000, 20000, 1);   // 400 MB of the 724 MB heap of memory_mb 1024 ...
    run("Duplicate...", "title=copy");                // ... and a copy: ImageJ prints <Out of memory>, goes on
    close("*");
    File.saveString(" ,Area,Mean\\n", output + "/results.csv");
    File.saveString("count,mean_area\\n0,NaN\\n", output + "/summary.csv");
} else
    File.saveString(" ,Area,Mean\\n1,100,2\\n2,50,3\\n", output + "/results.csv");
"""


manifest_for = runner_manifest


def statuses(tmp_path: Path) -> dict[str, dict]:
    return st.read_statuses(st.status_path(str(tmp_path / "work"), 1))


def test_half_written_tables_fail_their_images_with_the_reason(tmp_path, imagej):
    names = ["a.tif", "b_cut.tif", "c_quote.tif", "d_header.tif", "e_oom.tif"]
    make_images(tmp_path / "input", {n: 1 for n in names}, size=32)
    mpath = manifest_for(tmp_path, imagej, TABLES_MACRO, names)
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = statuses(tmp_path)
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b_cut.tif": "failed",
                                                         "c_quote.tif": "failed", "d_header.tif": "failed",
                                                         "e_oom.tif": "failed"}
    assert got["b_cut.tif"]["error"] == "results.csv line 3 has 2 field(s), its header 4 (cut off?)"
    assert "results.csv ends inside a quoted field" in got["c_quote.tif"]["error"]
    assert "results.csv has no rows, and no summary count of 0" in got["d_header.tif"]["error"]
    assert got["e_oom.tif"]["error"].startswith("out of memory: <Out of memory> (a 724 MB heap, of memory 1024 MB")
    assert got["a.tif"]["rows"] == 2 and got["a.tif"]["jvm"] == 1          # one JVM: no failure stopped it
    table = (tmp_path / "work" / "tables" / "task-0001.attempt-1.results.csv").read_text()
    assert table == "image,task,attempt,Area,Mean\na.tif,1,1,100,2\na.tif,1,1,50,3\n"


def test_an_image_too_large_for_the_heap_is_failed_out_of_memory_not_ok_with_zero(tmp_path, imagej):
    """The testbed's case: a 16000x16000 8-bit TIFF, memory 1G, count_nuclei. ImageJ prints <Out of memory>
    (ten times), the macro carries on and writes a header and "0,NaN,NaN": failed, "out of memory"."""
    import numpy as np

    from sciops import MACRO_DIR
    from sciops.imaging.synthetic import write_tiff

    (tmp_path / "input").mkdir()
    big = tmp_path / "input" / "big.tif"
    image = np.zeros((16000, 16000), np.uint8)
    image[::97, :] = 200
    write_tiff(big, image)            # 256 MB
    del image
    make_images(tmp_path / "input", {"small.tif": 4}, size=128)
    try:
        mpath = manifest_for(tmp_path, imagej, (MACRO_DIR / "count_nuclei.ijm").read_text(), ["big.tif", "small.tif"],
                             expected_outputs=["results.csv", "summary.csv"], memory_mb=1024, image_timeout_s=120)
        assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    finally:
        big.unlink()
    got = statuses(tmp_path)
    assert got["big.tif"]["status"] == "failed" and "out of memory" in got["big.tif"]["error"], got["big.tif"]
    assert "raise memory" in got["big.tif"]["error"]
    assert got["small.tif"]["status"] == "ok" and got["small.tif"]["rows"] == 4     # the next image, counted
    log = Path(st.image_output_dir(str(tmp_path / "work"), "big.tif"), "log.txt").read_text()
    assert log.count("<Out of memory>") >= 2                                        # what ImageJ said, kept


GOOD_THEN_WORDS = "// @sciops outputs: results.csv\n" + ARGS + """
File.saveString(" ,Area,Mean\\n1,100,2\\n", output + "/results.csv");
print("fit residual error: 0.05");
print("Error: none of the fits diverged");
"""


def test_a_macros_printed_words_never_fail_a_good_image(tmp_path, imagej):
    make_images(tmp_path / "input", {"a.tif": 1}, size=32)
    mpath = manifest_for(tmp_path, imagej, GOOD_THEN_WORDS, ["a.tif"])
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = statuses(tmp_path)["a.tif"]
    assert (got["status"], got["error"], got["rows"]) == ("ok", "", 1)
    out = Path(st.image_output_dir(str(tmp_path / "work"), "a.tif"))
    assert "fit residual error: 0.05" in (out / "log.txt").read_text()


NO_SUCH_COMMAND = "// @sciops outputs: results.csv\n" + ARGS + """
if (indexOf(input, "_typo.") >= 0)
    run("No Such Command");
File.saveString(" ,Area\\n1,100\\n", output + "/results.csv");
"""


def test_a_macro_error_that_prints_nothing_is_reported_as_that_error_not_as_a_stall(tmp_path, imagej):
    """ImageJ 1.53t shows a modal 'Unrecognized command: "No Such Command"' dialog and prints nothing; the
    dialog watcher prints it, and the runner fails the image with its text and goes on. stall_seconds is 120
    and the task is given 90 s: a stall could not pass this test."""
    import subprocess
    import sys

    make_images(tmp_path / "input", {"a_typo.tif": 1, "b.tif": 1}, size=32)
    mpath = manifest_for(tmp_path, imagej, NO_SUCH_COMMAND, ["a_typo.tif", "b.tif"], stall_seconds=120,
                         image_timeout_s=600)
    subprocess.run([sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath), "--task", "1"],
                   check=True, timeout=90, stdout=subprocess.DEVNULL)
    got = statuses(tmp_path)
    typo = got["a_typo.tif"]
    assert typo["status"] == "failed" and "stalled" not in typo["error"]
    assert typo["error"].startswith('ImageJ showed a dialog "Macro Error": Unrecognized command: "No Such Command"')
    assert (got["b.tif"]["status"], got["b.tif"]["jvm"]) == ("ok", 2)        # the rest, in a new JVM


def test_without_the_dialog_watcher_a_dialog_is_named_from_the_x_server(tmp_path, imagej):
    """A Java without its compiler module cannot build the watcher: the idle JVM's display shows the dialog's
    title (xwininfo), and the image fails with it within seconds, not after stall_seconds (120; the task is
    given 90 s)."""
    import shutil
    import subprocess
    import sys

    assert shutil.which("xwininfo"), "x11-utils is not installed: run scripts/setup.sh"
    java = tmp_path / "jre-without-javac"       # what a JRE without jdk.compiler says, else the real java
    java.write_text('#!/bin/sh\ncase "$*" in *jdk.compiler*) echo "java.lang.module.FindException: Module '
                    'jdk.compiler not found" >&2; exit 1 ;; esac\nexec %s "$@"\n' % imagej.get("java", "java"))
    java.chmod(0o755)
    make_images(tmp_path / "input", {"a_typo.tif": 1, "b.tif": 1}, size=32)
    mpath = manifest_for(tmp_path, {**imagej, "java": str(java)}, NO_SUCH_COMMAND, ["a_typo.tif", "b.tif"],
                         stall_seconds=120, image_timeout_s=600)
    subprocess.run([sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath), "--task", "1"],
                   check=True, timeout=90, stdout=subprocess.DEVNULL)
    got = statuses(tmp_path)
    assert got["a_typo.tif"]["error"].startswith('ImageJ showed a dialog "Macro Error" and waited for a click')
    assert got["b.tif"]["status"] == "ok"
    log = (tmp_path / "logs" / "task-0001.attempt-1.log").read_text()
    assert "no dialog watcher (could not compile it" in log and "Module jdk.compiler not found" in log
