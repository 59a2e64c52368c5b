"""sciops_node.session: a JVM killed or ended under an image, through main() and a fake ImageJ (no JVM)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sciops_task
from sciops_task import main

from sciops_node import contract


def test_jvm_killed_from_outside_stops_the_task_then_fails_the_image_the_second_time(tmp_path, fake_imagej_run):
    # kill -9 0: the whole stand-in process group, as a kill of the JVM would
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_killme.tif", "c.tif"], "*killme*) kill -9 0 ;;")
    assert main(["--manifest", str(mpath), "--task", "1"]) == contract.EXIT_INTERRUPTED
    assert set(contract.read_statuses(contract.status_path(str(work), 1))) == {"a.tif"}
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert "SIGKILL" in summary["error"]
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b_killme.tif": "failed", "c.tif": "ok"}
    assert "twice" in got["b_killme.tif"]["error"]


def test_an_image_rerun_after_a_killed_jvm_starts_from_an_empty_folder(tmp_path, fake_imagej_run):
    """What a JVM killed under an image had half-written is gone when the next attempt runs that image again."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], """*b.tif) if [ ! -e "$out/../../killed-once" ]; then
        echo "half" > "$out/results.csv"; echo "stale" > "$out/extra.tif"; touch "$out/../../killed-once"; kill -9 0
      fi; printf 'count\n1\n' > "$out/results.csv" ;;""")
    assert main(["--manifest", str(mpath), "--task", "1"]) == contract.EXIT_INTERRUPTED
    out = Path(contract.image_output_dir(str(work), "b.tif"))
    assert (out / "extra.tif").exists()                                   # the killed JVM's leftovers
    assert main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "ok"}
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]
    assert (out / "results.csv").read_text() == "count\n1\n"


@pytest.mark.parametrize("runner_too", [True, False])
def test_a_jvm_terminated_under_an_image_does_not_fail_it(tmp_path, runner_too, fake_imagej_run, begun_safe):
    """scancel signals every process of a task: ImageJ can end a moment before the runner hears of it.

    Either way the image in flight is not failed: with the runner stopped too, the stop explains
    it; alone (someone's kill of the JVM), it counts as a kill from outside, like ``kill -9``.
    """
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_slow.tif"], "*slow*) sleep 30 ;;")
    proc = subprocess.Popen([sys.executable, sciops_task.__file__, "--manifest", str(mpath), "--task", "1"])
    deadline = time.time() + 20
    while "b_slow.tif" not in begun_safe(work) and time.time() < deadline:
        time.sleep(0.1)
    [jvm] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.killpg(int(jvm), signal.SIGTERM)
    if runner_too:
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == (128 + signal.SIGTERM if runner_too else contract.EXIT_INTERRUPTED)
    assert {k: v["status"] for k, v in contract.read_statuses(contract.status_path(str(work), 1)).items()} == \
        {"a.tif": "ok"}
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert "SIGTERM" in summary["error"]


# -- ImageJ's own error words, and a macro's own words (issue 35) ------------------------------------------

@pytest.mark.parametrize("line, kind", [
    # as ImageJ 1.53t prints them in -batch mode (seen on this testbed), and the JVM
    ("<Out of memory>", "out of memory"),
    ('Exception in thread "main" java.lang.OutOfMemoryError: Java heap space', "out of memory"),
    ("java.lang.OutOfMemoryError: Java heap space", "out of memory"),
    ("There is not enough free memory to allocate a ", "out of memory"),
    ("java.lang.IllegalStateException: Too early in import process: current step is READER", "exception"),
    ("loci.formats.FormatException: Unsupported", "exception"),
    ("java.lang.RuntimeException: Macro canceled", "exception"),
    ('Exception in thread "Run$_main" java.lang.NullPointerException', "exception"),
    ("Macro Error: Undefined variable in line 3", "macro error"),
    ("File not found: ", "imagej"),
    ("Error saving results:", "imagej"),
    ("Image is too large. ImageJ does not support", "imagej"),
    ("FileInfo parameter error. ", "imagej"),
    ('Unrecognized command: "No Such Command"', "imagej"),
    # a macro's own words: never an error
    ("fit residual error: 0.05", None),
    ("Error: none found", None),
    ("no errors", None),
    ("OutOfMemory avoided by tiling", None),
    ("my exception count: 0", None),
    ("  <Out of memory>", None),
    ("java.lang.Math is used", None),
    ("\tat ij.macro.Interpreter.error(Interpreter.java:1404)", None),
])
def test_imagej_error_lines_are_imagejs_own_words_only(line, kind):
    from sciops_node.session import imagej_error

    assert imagej_error(line) == kind


def test_an_out_of_memory_image_fails_and_printed_words_do_not(tmp_path, fake_imagej_run):
    """ImageJ's '<Out of memory>' (then a macro that carries on and writes a count of 0) fails its image
    with "out of memory"; a macro that prints "fit residual error: 0.05" after good results stays ok."""
    mpath, work = fake_imagej_run(tmp_path, ["oom.tif", "fit.tif"], r"""*oom*) echo '<Out of memory>'
       echo '<Out of memory>'; echo 'java.lang.RuntimeException: Macro canceled'
       printf ' ,Area\n' > "$out/results.csv"; printf 'count\n0\n' > "$out/summary.csv" ;;
    *fit*) printf 'count\n1\n' > "$out/results.csv"; echo 'fit residual error: 0.05'; echo 'Error: none' ;;""")
    assert main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert got["oom.tif"]["status"] == "failed"
    assert got["oom.tif"]["error"] == "out of memory: <Out of memory> (a 724 MB heap, of memory 1024 MB: raise memory)"
    assert got["fit.tif"]["status"] == "ok" and got["fit.tif"]["error"] == ""
    log = Path(contract.image_output_dir(str(work), "oom.tif"), "log.txt").read_text()
    assert log.startswith("<Out of memory>\n<Out of memory>\njava.lang.RuntimeException")   # all it printed


def test_a_dialog_fails_its_image_at_once_with_its_text(tmp_path, fake_imagej_run):
    """The dialog watcher's line (SciopsDialogs.java) for a JVM that then waits for ever: the image fails with
    the dialog's text (a stall, after stall_seconds, would say "ImageJ stalled"), and a new JVM runs the rest."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], r"""*a.tif) printf 'SCIOPS_DIALOG\tMacro Error\t'
       echo 'Undefined variable in line 3 | x = <notDefined> + 1 ;'; sleep 600 ;;""")
    assert main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert got["a.tif"]["error"] == ('ImageJ showed a dialog "Macro Error": Undefined variable in line 3 | '
                                     'x = <notDefined> + 1 ;')
    assert (got["b.tif"]["status"], got["b.tif"]["jvm"]) == ("ok", 2)


def test_a_macro_printing_the_drivers_lines_is_only_printing(tmp_path, fake_imagej_run):
    """Lines without the JVM's secret are the macro's: no image begun or ended, nothing written in the folder they
    name, no JVM restarted (with ImageJ: tests/hostile/test_macro_sandbox.py)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], r"""*a.tif) printf 'SCIOPS_BEGIN\t%s\n' "$in_elsewhere"
       printf 'SCIOPS_END\t%s\t5\t\nSCIOPS_VERSION\t6.66\nSCIOPS_DONE\n' "$in_elsewhere"
       printf 'count\n1\n' > "$out/results.csv" ;;""".replace("$in_elsewhere", str(elsewhere)))
    assert main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = contract.read_statuses(contract.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "ok"}
    assert list(elsewhere.iterdir()) == []
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert (summary["jvm_starts"], summary["imagej_version"]) == (1, "9.99z")
    assert f"SCIOPS_BEGIN\t{elsewhere}" in Path(contract.image_output_dir(str(work), "a.tif"), "log.txt").read_text()
