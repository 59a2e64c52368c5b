"""sciops_node.sandbox: bubblewrap's command line, and a sandbox that cannot run never becomes no sandbox."""
from __future__ import annotations

import json
import shutil

import pytest

from sciops_node import sandbox


def test_the_jvm_sees_its_input_read_only_writes_only_its_folders_and_has_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "base_flags", lambda spec: (list(sandbox.FLAG_SETS[0]), None))
    scratch, images = tmp_path / "scratch", tmp_path / "work" / "images"
    (tmp_path / "input").mkdir()
    argv = sandbox.wrap({"kind": "bwrap"}, ["java", "-jar", "ij.jar"], [str(tmp_path / "input")],
                        [str(scratch), str(images)], str(scratch))
    pairs = list(zip(argv, argv[1:]))
    assert argv[0] in (shutil.which("bwrap"), None)
    assert "--unshare-all" in argv and ("--cap-drop", "ALL") in pairs and "--die-with-parent" in argv
    assert ("--ro-bind", str(tmp_path / "input")) in pairs
    assert ("--bind", str(scratch)) in pairs and ("--bind", str(images)) in pairs and images.is_dir()
    assert ("--tmpfs", "/usr/bin") in pairs and ("--tmpfs", "/tmp") in pairs   # no shell; a /tmp of its own
    assert not [a for a in argv if a in ("/", "/root", "/home", "/etc")]      # nothing else of the machine
    tail = argv[argv.index("--") + 1:]
    assert tail[0].startswith("/usr/lib/jvm/") and tail[1:] == ["-jar", "ij.jar"]   # java by its real path


def test_a_bwrap_that_cannot_run_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setattr(sandbox, "_probed", {})
    why = sandbox.unusable({"kind": "bwrap", "bwrap": "no-such-bwrap"})
    assert "no-such-bwrap" in why and "SCIOPS_MACRO_SANDBOX=off" in why
    with pytest.raises(RuntimeError, match="SCIOPS_MACRO_SANDBOX"):
        sandbox.wrap({"kind": "bwrap", "bwrap": "no-such-bwrap"}, ["java"], [], [], "/")


def test_the_runner_never_starts_an_unconfined_jvm_in_its_place(tmp_path, fake_imagej_run, monkeypatch):
    from sciops_task import main

    from sciops_node import contract

    mpath, work = fake_imagej_run(tmp_path, ["a.tif"], "")
    doc = json.loads(mpath.read_text())
    doc["launcher"]["sandbox"] = {"kind": "bwrap", "bwrap": "no-such-bwrap"}
    mpath.write_text(json.dumps(doc))
    assert main(["--manifest", str(mpath), "--task", "1"]) == contract.EXIT_IMAGEJ_BROKEN
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert "SCIOPS_MACRO_SANDBOX=off" in summary["error"] and summary["jvm_starts"] == 0
