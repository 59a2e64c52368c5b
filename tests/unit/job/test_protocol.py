"""sciops_node.protocol: the driver's lines told from the macro's by the JVM's secret; inputs a macro changed."""
from __future__ import annotations

import os

from sciops_node import protocol
from sciops_node.protocol import InputGuard, Lines


def test_only_lines_with_the_jvms_secret_are_the_drivers():
    secret = protocol.new_secret()
    assert len(secret) == 32 and secret != protocol.new_secret()
    lines = Lines(secret)
    assert lines.parse(f"SCIOPS_{secret}_BEGIN\t/w/images/a.tif") == ("BEGIN", ["BEGIN", "/w/images/a.tif"])
    assert lines.parse(f"SCIOPS_{secret}_DONE") == ("DONE", ["DONE"])
    for forged in ("SCIOPS_BEGIN\t/elsewhere", f"SCIOPS_{'0' * 32}_BEGIN\t/elsewhere", f" SCIOPS_{secret}_BEGIN\t/x",
                   f"SCIOPS_{secret}_RM\t/x", "SCIOPS_DIALOG\tMacro Error"):
        assert lines.parse(forged) == (None, None), forged


def test_the_log_keeps_the_drivers_lines_without_the_secret():
    lines = Lines("ab12")
    assert lines.loggable("SCIOPS_ab12_END\t/w/a\t5\t") == "SCIOPS_END\t/w/a\t5\t"
    assert lines.loggable("SCIOPS_BEGIN\t/elsewhere") == "SCIOPS_BEGIN\t/elsewhere"   # the macro's, as it is


def test_the_job_files_first_line_is_the_secret_then_macro_and_arguments():
    assert protocol.job_header("ab12", "/w/job/m.ijm", {"b": "2", "a": "x y"}) == \
        "secret=ab12\nmacro=/w/job/m.ijm\nargs=a=x y\tb=2\n"


def test_an_input_deleted_or_rewritten_is_reported_once_against_its_own_file(tmp_path):
    for name in ("a.tif", "b.tif", "c.tif"):
        (tmp_path / name).write_bytes(b"x" * 10)
    guard = InputGuard(str(tmp_path))
    guard.add(str(tmp_path / n) for n in ("a.tif", "b.tif", "c.tif", "gone.tif"))
    assert guard.check(str(tmp_path / "a.tif")) == []
    os.remove(tmp_path / "a.tif")
    (tmp_path / "b.tif").write_bytes(b"y" * 3)
    assert guard.check(str(tmp_path / "a.tif")) == ["input/a.tif deleted"]
    assert guard.check(str(tmp_path / "a.tif")) == []                    # once
    assert guard.check(str(tmp_path / "gone.tif")) == []                 # absent before: nothing to compare
    assert guard.sweep() == {str(tmp_path / "b.tif"): "input/b.tif changed (size 10 -> 3 bytes, mtime changed)"}
    assert guard.sweep() == {}
    assert protocol.reason(["input/a.tif deleted"]) == (
        "its input was changed while the task ran (a macro may never change input/): input/a.tif deleted")
