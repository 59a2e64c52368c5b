"""The task runner and the driver macro with the real ImageJ 1 under Xvfb."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sciops_task as st
from helpers import runner_manifest, wait_ended

from sciops import JOB_DIR, MACRO_DIR
from sciops.imaging.synthetic import make_images
from sciops_node import session

pytestmark = pytest.mark.imagej

ECHO_MACRO = """// @sciops outputs: results.csv
args = getArgument();
lines = split(args, "\\n");
f = File.open(substring(lines[1], 7) + "/results.csv");
print(f, "key,value");
for (i = 0; i < lines.length; i++) {
    kv = split(lines[i], "=");
    print(f, kv[0] + "," + substring(lines[i], lengthOf(kv[0]) + 1));
}
File.close(f);
"""

MISBEHAVING_MACRO = """// @sciops outputs: results.csv
input = "";
output = "";
lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) {
    if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);
    if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
}
if (indexOf(input, "_undef.") >= 0) x = notDefinedAnywhere + 1;   // macro error: modal dialog
if (indexOf(input, "_spin.") >= 0) { n = 0; while (true) n = n + 1; }  // never ends, CPU busy
if (indexOf(input, "_slow.") >= 0) wait(4000);
if (indexOf(input, "_hang.") >= 0) wait(600000);                       // no output, an idle CPU
f = File.open(output + "/results.csv");
print(f, "done");
print(f, "1");
File.close(f);
"""


def manifest_for(tmp_path: Path, launcher: dict, macro_text: str, images: list[str], **kw) -> Path:
    return runner_manifest(tmp_path, launcher, macro_text, images,
                           **{"macro_args": {"threshold": "Otsu", "label": "a b c"}, **kw})


def statuses(tmp_path):
    return st.read_statuses(st.status_path(str(tmp_path / "work"), 1))


def test_driver_passes_arguments_and_reports_version(tmp_path, imagej):
    make_images(tmp_path / "input", {"dir with space/ü 1.tif": 2, "b.tif": 1}, size=64)
    mpath = manifest_for(tmp_path, imagej, ECHO_MACRO, ["b.tif", "dir with space/ü 1.tif"])
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = statuses(tmp_path)
    assert {k: v["status"] for k, v in got.items()} == {"b.tif": "ok", "dir with space/ü 1.tif": "ok"}
    table = (Path(st.image_output_dir(str(tmp_path / "work"), "dir with space/ü 1.tif")) / "results.csv").read_text()
    assert f"input,{tmp_path}/input/dir with space/ü 1.tif" in table
    assert "label,a b c" in table and "threshold,Otsu" in table
    summary = json.loads((tmp_path / "work/status/task-0001.attempt-1.json").read_text())
    assert summary["imagej_version"].startswith("1.") and summary["jvm_starts"] == 1


def test_the_driver_makes_an_output_folder_the_runner_has_not_made_yet(tmp_path, imagej, monkeypatch):
    """On a first attempt the runner makes the folders while the JVM starts: the driver must not depend on it."""
    make_images(tmp_path / "input", {"dir with space/ü 1.tif": 2, "b.tif": 1}, size=64)
    mpath = manifest_for(tmp_path, imagej, ECHO_MACRO, ["b.tif", "dir with space/ü 1.tif"])
    monkeypatch.setattr(session, "make_folders", lambda folders: None)   # where run_jvm looks it up
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    assert {k: v["status"] for k, v in statuses(tmp_path).items()} == {"b.tif": "ok", "dir with space/ü 1.tif": "ok"}


def test_a_macro_error_and_a_stall_are_caught_fast_and_the_rest_processed(tmp_path, imagej):
    make_images(tmp_path / "input", {"a.tif": 1, "b_undef.tif": 1, "c_hang.tif": 1, "d.tif": 1}, size=64)
    mpath = manifest_for(tmp_path, imagej, MISBEHAVING_MACRO, ["a.tif", "b_undef.tif", "c_hang.tif", "d.tif"],
                         stall_seconds=5, image_timeout_s=120)
    t0 = time.time()
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    elapsed = time.time() - t0
    got = statuses(tmp_path)
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b_undef.tif": "failed", "c_hang.tif": "failed",
                                                         "d.tif": "ok"}
    # ImageJ's modal "Macro Error" dialog, read by the dialog watcher (sciops_node/SciopsDialogs.java)
    assert got["b_undef.tif"]["error"].startswith('ImageJ showed a dialog "Macro Error": Undefined variable in line')
    assert "stalled" in got["c_hang.tif"]["error"]
    assert (got["c_hang.tif"]["jvm"], got["d.tif"]["jvm"]) == (2, 3)          # restarted on the rest each time
    assert elapsed < 100, "a stall must be caught long before the image timeout"


def test_timeout_kills_busy_image_and_restarts(tmp_path, imagej):
    make_images(tmp_path / "input", {"a_spin.tif": 1, "b.tif": 1}, size=64)
    mpath = manifest_for(tmp_path, imagej, MISBEHAVING_MACRO, ["a_spin.tif", "b.tif"], image_timeout_s=4,
                         stall_seconds=30)
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = statuses(tmp_path)
    assert got["a_spin.tif"]["status"] == "timeout" and got["b.tif"]["status"] == "ok"
    assert "image_timeout_s" in got["a_spin.tif"]["error"]


def test_killed_task_resumes_where_it_stopped(tmp_path, imagej):
    make_images(tmp_path / "input", {"a.tif": 1, "b_slow.tif": 1, "c.tif": 1}, size=64)
    mpath = manifest_for(tmp_path, imagej, MISBEHAVING_MACRO, ["a.tif", "b_slow.tif", "c.tif"])
    proc = subprocess.Popen([sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath), "--task", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while "a.tif" not in statuses(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the task and its JVM, as kill -9 / qdel would
    proc.wait()
    assert set(statuses(tmp_path)) == {"a.tif"}
    stale = Path(st.image_output_dir(str(tmp_path / "work"), "b_slow.tif"), "from-the-killed-attempt.csv")
    stale.write_text("x")
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    assert not stale.exists()   # a later attempt clears what a killed one left before its JVM starts
    got = statuses(tmp_path)
    assert {k: (v["status"], v["attempt"]) for k, v in got.items()} == {
        "a.tif": ("ok", 1), "b_slow.tif": ("ok", 2), "c.tif": ("ok", 2)}


def test_count_nuclei_counts_synthetic_nuclei_exactly(tmp_path, imagej):
    counts = {"n03.tif": 3, "n11.tif": 11, "n25.tif": 25}
    make_images(tmp_path / "input", counts, size=256)
    macro = (MACRO_DIR / "count_nuclei.ijm").read_text()
    mpath = manifest_for(tmp_path, imagej, macro, sorted(counts), expected_outputs=["results.csv", "summary.csv"],
                         macro_args={})
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    for name, n in counts.items():
        out = Path(st.image_output_dir(str(tmp_path / "work"), name))
        summary = (out / "summary.csv").read_text().splitlines()
        assert summary[0] == "count,mean_area,mean_intensity"
        assert int(summary[1].split(",")[0]) == n, name
        assert len((out / "results.csv").read_text().strip().splitlines()) == n + 1
    # the runner's chunk tables hold the same rows as the per-image files, and collation reads them
    import pandas as pd

    from sciops.reporting.collate import collate, reference_tables

    manifest = json.loads(mpath.read_text())
    assert sorted(os.listdir(tmp_path / "work" / "tables")) == ["task-0001.attempt-1.results.csv",
                                                                "task-0001.attempt-1.summary.csv"]
    c = collate(tmp_path, manifest)
    assert (c.ok, c.result_rows) == (3, sum(counts.values()))
    reference, summary = reference_tables(tmp_path, manifest)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv"), reference, check_dtype=False)
    got = pd.read_csv(tmp_path / "summary.csv")
    assert list(got["count"]) == [counts[i] for i in got["image"]] == [s["count"] for s in summary]
    count = json.loads((tmp_path / "work" / "status" / "task-0001.count.json").read_text())
    assert (count["done"], count["ok"], count["images"]) == (3, 3, 3)


def test_several_tasks_share_a_node(tmp_path, imagej):
    """Private prefs/temp dirs, -port0 and one Xvfb per task: concurrent JVMs do not clash."""
    names = [f"i{k}.tif" for k in range(6)]
    make_images(tmp_path / "input", {n: 2 for n in names}, size=64)
    mpath = manifest_for(tmp_path, imagej, ECHO_MACRO, [])
    manifest = json.loads(mpath.read_text())
    manifest["chunks"] = [names[0:2], names[2:4], names[4:6]]
    mpath.write_text(json.dumps(manifest))
    procs = [subprocess.Popen([sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath),
                               "--task", str(t)], stdout=subprocess.DEVNULL) for t in (1, 2, 3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    done = {}
    for t in (1, 2, 3):
        done.update(st.read_statuses(st.status_path(str(tmp_path / "work"), t)))
    assert sorted(done) == names and {v["status"] for v in done.values()} == {"ok"}


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (JVM and Xvfb run in sessions of their own, so not by process group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_tasks_children_and_scratch_go_with_it(tmp_path, imagej, sig):
    """kill -9 (OOM killer, node agent) or SIGTERM (scancel, qdel) of the runner alone: its JVM and Xvfb die
    too, and its scratch folder is gone (at once on SIGTERM; by the next task on the node after SIGKILL)."""
    make_images(tmp_path / "input", {"a_slow.tif": 1, "b_slow.tif": 1}, size=64)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mpath = manifest_for(tmp_path, imagej, MISBEHAVING_MACRO, ["a_slow.tif", "b_slow.tif"],
                         scratch_dir=str(scratch))
    proc = subprocess.Popen([sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath), "--task", "1"],
                            stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any("java" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                                              for p in _alive(_descendants(proc.pid))):
        time.sleep(0.2)
    children = _descendants(proc.pid)
    assert len(children) >= 2 and list(scratch.iterdir()), "the JVM and Xvfb did not start"
    proc.send_signal(sig)                     # the runner alone, as the OOM killer or a scheduler's signal
    proc.wait(30)
    deadline = time.time() + 15
    while _alive(children) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"left running: {_alive(children)}"
    if sig == signal.SIGTERM:
        assert list(scratch.iterdir()) == []
    else:
        assert list(scratch.iterdir())        # nothing could clean up after SIGKILL ...
        st.remove_stale_scratch(str(scratch))  # ... the next task on the node does, first thing
        assert list(scratch.iterdir()) == []


def _submit_local(tmp_path, mpath, tasks, slots):
    """The local backend's way: localq through LocalScheduler (which asks its tasks to chain)."""
    from sciops.arrays.commands import LocalRunner
    from sciops.arrays.schedulers.base import ArraySpec
    from sciops.arrays.schedulers.local import LocalScheduler

    sched, runner = LocalScheduler(spool=str(tmp_path / "spool"), slots=slots), LocalRunner()
    job_id = sched.submit(runner, ArraySpec(name="t", task_ids=tasks, log_dir=str(tmp_path / "logs"),
                                            workdir=str(tmp_path), env={"SCIOPS_ATTEMPT": "1"},
                                            command=[sys.executable, str(JOB_DIR / "sciops_task.py"),
                                                     "--manifest", str(mpath)]))
    return sched, runner, job_id


def _attempts(tmp_path):
    return {a["task"]: a for a in (json.loads(p.read_text()) for p in (tmp_path / "work/status").glob("task-*.attempt-1.json"))}


def test_on_the_local_backend_a_slot_runs_the_arrays_next_chunks_in_its_warm_jvm(tmp_path, imagej):
    """Chaining: 6 chunks on 2 slots run in 2 JVMs; each chunk keeps its own statuses, tables and counts."""
    from sciops.arrays.schedulers.base import JobState

    chunks = [[f"c{c}_{k}.tif" for k in range(3)] for c in range(1, 7)]
    make_images(tmp_path / "input", {n: 2 for chunk in chunks for n in chunk}, size=64)
    mpath = manifest_for(tmp_path, imagej, ECHO_MACRO, [])
    manifest = json.loads(mpath.read_text())
    manifest["chunks"] = chunks
    mpath.write_text(json.dumps(manifest))
    tasks = [1, 2, 3, 4, 5, 6]
    sched, runner, job_id = _submit_local(tmp_path, mpath, tasks, slots=2)
    assert set(wait_ended(sched, runner, job_id, tasks, timeout=180).values()) == {JobState.DONE}

    work = str(tmp_path / "work")
    for t, chunk in enumerate(chunks, 1):
        got = st.read_statuses(st.status_path(work, t))
        assert sorted(got) == sorted(chunk) and {r["status"] for r in got.values()} == {"ok"}
        assert {r["task"] for r in got.values()} == {t}
        assert {r.get("by") for r in got.values()} <= ({None} if t <= 2 else {1, 2})   # whose JVM ran a chained one
        assert {name for r in got.values() for name, _, _ in r["tables"].values()} == {
            f"task-{t:04d}.attempt-1.results.csv"}
        assert json.loads(Path(st.count_path(work, t)).read_text())["done"] == 3
    attempts = _attempts(tmp_path)
    assert sum(a["jvm_starts"] for a in attempts.values()) == 2          # one JVM a slot for the whole array
    assert sorted(attempts[1]["chained"] + attempts[2]["chained"]) == [3, 4, 5, 6]
    assert all(attempts[t]["jvm_starts"] == 0 and attempts[t]["exit"] == 0 for t in (3, 4, 5, 6))
    assert not list((tmp_path / "work/status").glob("*.claim"))
    # which slot's runner claims which chunk is a race (either may take them all): check the log of any one
    by, chained = next((t, attempts[t]["chained"][0]) for t in (1, 2) if attempts[t]["chained"])
    assert f"run in task {by}'s JVM (chained)" in (tmp_path / f"logs/task-{chained:04d}.attempt-1.log").read_text()


def test_a_chained_chunk_whose_runner_was_killed_is_finished_by_its_own_task(tmp_path, imagej):
    """Task 1's runner, killed (kill -9) while its JVM runs task 2's chunk: task 2's own runner finishes it."""
    from sciops.arrays.schedulers.base import JobState

    chunks = [["a1.tif", "a2.tif"], ["b1.tif", "b2_slow.tif", "b3.tif"]]
    make_images(tmp_path / "input", {n: 2 for chunk in chunks for n in chunk}, size=64)
    mpath = manifest_for(tmp_path, imagej, MISBEHAVING_MACRO, [])
    manifest = json.loads(mpath.read_text())
    manifest["chunks"] = chunks
    mpath.write_text(json.dumps(manifest))
    sched, runner, job_id = _submit_local(tmp_path, mpath, [1, 2], slots=1)
    work = str(tmp_path / "work")
    deadline = time.time() + 120
    while not any(r.get("image") == "b2_slow.tif" for r in st._records(st.status_path(work, 2))):
        assert time.time() < deadline, "task 1's runner never began task 2's slow image"
        time.sleep(0.1)
    task1 = json.loads((tmp_path / "spool" / job_id / "tasks" / "1.json").read_text())
    os.kill(task1["pid"], signal.SIGKILL)   # the JVM dies with it (PR_SET_PDEATHSIG)
    states = wait_ended(sched, runner, job_id, [1, 2], timeout=180)
    assert states == {1: JobState.FAILED, 2: JobState.DONE}
    got = st.read_statuses(st.status_path(work, 2))
    assert sorted(got) == ["b1.tif", "b2_slow.tif", "b3.tif"] and {r["status"] for r in got.values()} == {"ok"}
    assert _attempts(tmp_path)[2]["jvm_starts"] == 1                     # it took over the dead runner's claim
    # the dead runner's claim of its own task stays until that task's next attempt takes it over
    assert [p.name for p in (tmp_path / "work/status").glob("*.claim")] == ["task-0001.claim"]
