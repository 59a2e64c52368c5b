"""Issue 36 with the real ImageJ 1 under Xvfb and the real bubblewrap: what a hostile macro cannot do.

* In the sandbox (the local backend's default, ``SCIOPS_MACRO_SANDBOX``; ``sciops_node.sandbox``) a macro cannot
  write outside its output folder, read Airflow's home, reach the network or run a shell, and each attempt is
  in the run's record: the image failed with the dialog ImageJ showed, or its log.txt holds what ImageJ said.
* Anywhere (clusters have no sandbox) a macro that deletes or rewrites input/ fails its image, naming the file.
* The driver's lines are out of band: a macro printing ``SCIOPS_BEGIN <folder>`` lines changes nothing.
"""
from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import pytest
from helpers import runner_manifest
import sciops_task as st
from sciops.imaging.imagej import confined
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

#: A lab macro that does one forbidden thing an image (its name says which), then writes its result.
HOSTILE_MACRO = "// @sciops outputs: results.csv\n" + ARGS + """
if (indexOf(input, "write") >= 0) {
    File.saveString("pwned", output + "/../../../../pwned.txt");   // up and out of its folder
    File.saveString("pwned", outside + "/pwned.txt");
}
if (indexOf(input, "read") >= 0)
    print("airflow.cfg says: " + File.openAsString(cfg));
if (indexOf(input, "socket") >= 0)
    print("the socket said: " + File.openUrlAsString("http://127.0.0.1:" + port + "/"));
if (indexOf(input, "exec") >= 0)
    print("the shell said: " + exec("sh", "-c", "echo ran > " + outside + "/shell-ran; echo shell ran"));
if (indexOf(input, "delete") >= 0)
    print("deleted its input: " + File.delete(input));
File.saveString("count\\n1\\n", output + "/results.csv");
"""


def manifest_for(tmp_path: Path, launcher: dict, macro_text: str, images: list[str], **kw) -> Path:
    return runner_manifest(tmp_path, launcher, macro_text, images, run_dir=tmp_path / "run",
                           macro_dir=tmp_path / "run" / "work" / "job", **{"stall_seconds": 20, **kw})


def run_task(tmp_path: Path, mpath: Path) -> tuple[dict[str, dict], dict, str]:
    """Statuses, the attempt summary and the task log of task 1."""
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    work = tmp_path / "run" / "work"
    got = st.read_statuses(st.status_path(str(work), 1))
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    return got, summary, (tmp_path / "run" / "logs" / "task-0001.attempt-1.log").read_text()


def image_log(tmp_path: Path, image: str) -> str:
    return (Path(st.image_output_dir(str(tmp_path / "run" / "work"), image)) / "log.txt").read_text()


class Listener:
    """A TCP server on the worker's loopback that counts who connects."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_a_sandboxed_macro_cannot_write_outside_read_airflows_home_reach_the_network_or_run_a_shell(tmp_path, imagej,
                                                                                                    monkeypatch):
    monkeypatch.delenv("SCIOPS_MACRO_SANDBOX", raising=False)   # the default: bwrap
    launcher = confined(imagej)
    assert launcher["sandbox"]["kind"] == "bwrap"
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text("[database]\nsql_alchemy_conn = postgresql://airflow:s3cr3t-pw@db/airflow\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    images = ["write.tif", "read.tif", "socket.tif", "exec.tif", "delete.tif", "good.tif"]
    make_images(tmp_path / "input", {name: 1 for name in images}, size=32)
    listener = Listener()
    try:
        mpath = manifest_for(tmp_path, launcher, HOSTILE_MACRO, images, macro_args={
            "outside": str(outside), "cfg": str(home / "airflow.cfg"), "port": str(listener.port)})
        got, summary, task_log = run_task(tmp_path, mpath)
    finally:
        listener.close()
    status = {k: v["status"] for k, v in got.items()}
    # writing outside: nothing written, the image failed with what ImageJ said
    assert not (outside / "pwned.txt").exists() and not list(tmp_path.rglob("pwned.txt"))
    assert status["write.tif"] == "failed" and "pwned.txt" in got["write.tif"]["error"], got["write.tif"]
    # Airflow's home is not there: the image failed, and its password is nowhere in the run
    assert status["read.tif"] == "failed" and "airflow.cfg" in got["read.tif"]["error"], got["read.tif"]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and b"s3cr3t-pw" in p.read_bytes()]
    # no network: the worker's loopback server saw nobody, and the image's log says the connection failed
    assert listener.connections == 0
    assert "the socket said: <Error: java.net.ConnectException" in image_log(tmp_path, "socket.tif")
    # no shell to run
    assert not (outside / "shell-ran").exists()
    assert 'the shell said: Cannot run program "sh"' in image_log(tmp_path, "exec.tif")
    # input/ is read only: the image's File.delete said 0 and the image is still there
    assert "deleted its input: 0" in image_log(tmp_path, "delete.tif")
    assert (tmp_path / "input" / "delete.tif").stat().st_size > 0
    # an honest macro runs as before, in one JVM, bwrap's line in the log
    assert status["good.tif"] == "ok" and status["socket.tif"] == "ok" and status["delete.tif"] == "ok"
    assert summary["jvm_starts"] == 3 and "bwrap --unshare-all" in task_log   # write, read: a dialog each


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


def test_a_busy_image_in_the_sandbox_is_not_taken_for_a_stall(tmp_path, imagej, monkeypatch):
    """The runner samples the CPU of the JVM inside the sandbox (bwrap's own processes only wait): an image that
    computes for longer than stall_seconds, printing nothing, is ok; one that waits idle is a stall."""
    monkeypatch.delenv("SCIOPS_MACRO_SANDBOX", raising=False)
    macro = "// @sciops outputs: results.csv\n" + ARGS + """
x = 0; t = getTime();
if (indexOf(input, "busy") >= 0) while (getTime() - t < 7000) x = x + sin(x);
if (indexOf(input, "idle") >= 0) wait(60000);
File.saveString("count\\n1\\n", output + "/results.csv");
"""
    make_images(tmp_path / "input", {"a_busy.tif": 1, "b_idle.tif": 1, "c.tif": 1}, size=32)
    mpath = manifest_for(tmp_path, confined(imagej), macro, ["a_busy.tif", "b_idle.tif", "c.tif"], stall_seconds=3)
    got, summary, _ = run_task(tmp_path, mpath)
    assert got["a_busy.tif"]["status"] == "ok" and got["a_busy.tif"]["seconds"] > 6, got["a_busy.tif"]
    assert got["b_idle.tif"]["status"] == "failed" and "stalled" in got["b_idle.tif"]["error"]
    assert got["c.tif"]["status"] == "ok" and summary["jvm_starts"] == 2
