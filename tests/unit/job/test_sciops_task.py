"""The task runner through main() and a fake ImageJ (no JVM); the module-level parts are tested by module."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sciops_task as st


def fake_imagej_run(tmp_path, images, cases):
    """A manifest whose "Fiji" is a shell script speaking the driver's protocol.

    For every image of the job file it prints BEGIN, runs ``cases`` (shell ``case`` arms on
    ``$input``; the default writes results.csv), then END. Fiji's argv puts the job file 10th.
    """
    fake = tmp_path / "fake-imagej"
    fake.write_text("""#!/bin/sh
job="${10}"
echo "SCIOPS_VERSION\t9.99z"
tail -n +3 "$job" | while IFS="$(printf '\\t')" read -r input out argument; do
  [ -d "$out" ] || mkdir "$out"   # as the driver does: the runner may not have made it yet
  echo "SCIOPS_BEGIN\t$input"
  case "$input" in
    %s
    *) echo "count" > "$out/results.csv" ;;
  esac
  echo "SCIOPS_END\t$input\t5\t"
done
echo SCIOPS_DONE
""" % cases)
    fake.chmod(0o755)
    work = tmp_path / "work"
    manifest = {"work_dir": str(work), "run_dir": str(tmp_path), "input_dir": str(tmp_path / "in"),
                "macro_path": "/m.ijm", "driver_path": "/d.ijm", "chunks": [images],
                "expected_outputs": ["results.csv"], "launcher": {"kind": "fiji", "fiji": str(fake)},
                "memory_mb": 1024, "image_timeout_s": 30, "stall_seconds": 10}
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    return mpath, work


def test_runner_with_a_fake_imagej(tmp_path):
    """The bookkeeping against a stand-in JVM: image 'bad' logs an error, 'noout' writes nothing."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "bad.tif", "noout.tif"],
                                  '*bad*) echo "Exception in thread: boom" ;;\n    *noout*) ;;')
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == 0
    got = st.read_statuses(st.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "bad.tif": "failed", "noout.tif": "failed"}
    assert got["bad.tif"]["error"] == "Exception in thread: boom"
    assert "not written: results.csv" in got["noout.tif"]["error"]
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert summary["imagej_version"] == "9.99z" and summary["exit"] == 0 and summary["jvm_starts"] == 1
    # a second attempt finds everything done and starts no JVM
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    summary2 = json.loads((work / "status" / "task-0001.attempt-2.json").read_text())
    assert summary2["jvm_starts"] == 0


def test_runner_gives_up_when_imagej_cannot_start(tmp_path):
    manifest = {"work_dir": str(tmp_path / "w"), "run_dir": str(tmp_path), "input_dir": str(tmp_path),
                "macro_path": "/m.ijm", "driver_path": "/d.ijm", "chunks": [["a.tif"]],
                "launcher": {"kind": "fiji", "fiji": "/bin/false"}, "memory_mb": 1024,
                "image_timeout_s": 30, "stall_seconds": 10}
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == st.EXIT_IMAGEJ_BROKEN
    assert st.read_statuses(st.status_path(manifest["work_dir"], 1)) == {}  # no image blamed


def test_jvm_killed_from_outside_stops_the_task_then_fails_the_image_the_second_time(tmp_path):
    # kill -9 0: the whole stand-in process group, as a kill of the JVM would
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_killme.tif", "c.tif"], "*killme*) kill -9 0 ;;")
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == st.EXIT_INTERRUPTED
    assert set(st.read_statuses(st.status_path(str(work), 1))) == {"a.tif"}
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert "SIGKILL" in summary["error"]
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    got = st.read_statuses(st.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b_killme.tif": "failed", "c.tif": "ok"}
    assert "twice" in got["b_killme.tif"]["error"]


def test_an_image_rerun_after_a_killed_jvm_starts_from_an_empty_folder(tmp_path):
    """What a JVM killed under an image had half-written is gone when the next attempt runs that image again."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], """*b.tif) if [ ! -e "$out/../../killed-once" ]; then
        echo "half" > "$out/results.csv"; echo "stale" > "$out/extra.tif"; touch "$out/../../killed-once"; kill -9 0
      fi; echo "count" > "$out/results.csv" ;;""")
    assert st.main(["--manifest", str(mpath), "--task", "1"]) == st.EXIT_INTERRUPTED
    out = Path(st.image_output_dir(str(work), "b.tif"))
    assert (out / "extra.tif").exists()                                   # the killed JVM's leftovers
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    got = st.read_statuses(st.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "ok"}
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"] and (out / "results.csv").read_text() == "count\n"


def _died_under(work, image, attempt, done=()):
    """What a task killed whole (a memory kill takes the runner too) leaves: a begin line and no end."""
    path = st.status_path(str(work), 1)
    for img in done:
        st.append_status(path, {"image": img, "status": "ok", "attempt": attempt, "task": 1, "seconds": 1})
    st.append_status(path, {"image": image, "status": st.BEGIN, "attempt": attempt, "task": 1})


def _begun(work, attempt):
    recs = [json.loads(line) for line in Path(st.status_path(str(work), 1)).read_text().splitlines()]
    return [r["image"] for r in recs if r["status"] == st.BEGIN and r["attempt"] == attempt]


def test_the_image_in_flight_when_the_task_died_goes_last_and_is_blamed_at_the_second_death(tmp_path, monkeypatch):
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_hog.tif", "c.tif", "d.tif"], "")
    _died_under(work, "b_hog.tif", 1, done=["a.tif"])
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "2"]) == 0
    assert _begun(work, 2) == ["c.tif", "d.tif", "b_hog.tif"]     # the untried images first
    summary = json.loads((work / "status" / "task-0001.attempt-2.json").read_text())
    assert summary["exit"] == 0 and summary["end"] >= summary["start"]

    # died under it twice (attempts 1 and 2): failed without running it a third time
    (tmp_path / "two").mkdir()
    mpath, work = fake_imagej_run(tmp_path / "two", ["a.tif", "b_hog.tif", "c.tif"], "")
    _died_under(work, "b_hog.tif", 1, done=["a.tif"])
    _died_under(work, "b_hog.tif", 2, done=["c.tif"])
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "3"]) == 0
    got = st.read_statuses(st.status_path(str(work), 1))
    assert got["b_hog.tif"]["status"] == "failed" and "died while processing this image in 2" in got["b_hog.tif"]["error"]
    assert _begun(work, 3) == []

    # ... unless one of the deaths was a lost node: then it runs again
    (tmp_path / "lost").mkdir()
    mpath, work = fake_imagej_run(tmp_path / "lost", ["a.tif", "b_hog.tif"], "")
    _died_under(work, "b_hog.tif", 1, done=["a.tif"])
    _died_under(work, "b_hog.tif", 2)
    monkeypatch.setenv("SCIOPS_LOST", "7.1:1.2")
    assert st.main(["--manifest", str(mpath), "--task", "1", "--attempt", "3"]) == 0
    assert st.read_statuses(st.status_path(str(work), 1))["b_hog.tif"]["status"] == "ok"


@pytest.mark.parametrize("sig, says", [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR2, "qdel")])
def test_a_stopped_task_writes_its_summary(tmp_path, sig, says):
    """scancel (SIGTERM) and Grid Engine's -notify before qdel (SIGUSR2): the summary has the end (for the cost)."""
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_slow.tif"], "*slow*) sleep 30 ;;")
    proc = subprocess.Popen([sys.executable, st.__file__, "--manifest", str(mpath), "--task", "1"])
    path = work / "status" / "task-0001.attempt-1.json"
    deadline = time.time() + 20
    while "b_slow.tif" not in _begun_safe(work) and time.time() < deadline:
        time.sleep(0.1)
    assert json.loads(path.read_text())["end"] is None        # written at the start
    proc.send_signal(sig)
    assert proc.wait(20) == 128 + sig
    summary = json.loads(path.read_text())
    assert summary["exit"] == 128 + sig and says in summary["error"] and summary["end"] > summary["start"]


@pytest.mark.parametrize("runner_too", [True, False])
def test_a_jvm_terminated_under_an_image_does_not_fail_it(tmp_path, runner_too):
    """scancel signals every process of a task: ImageJ can end a moment before the runner hears of it.

    Either way the image in flight is not failed: with the runner stopped too, the stop explains
    it; alone (someone's kill of the JVM), it counts as a kill from outside, like ``kill -9``.
    """
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b_slow.tif"], "*slow*) sleep 30 ;;")
    proc = subprocess.Popen([sys.executable, st.__file__, "--manifest", str(mpath), "--task", "1"])
    deadline = time.time() + 20
    while "b_slow.tif" not in _begun_safe(work) and time.time() < deadline:
        time.sleep(0.1)
    [jvm] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.killpg(int(jvm), signal.SIGTERM)
    if runner_too:
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == (128 + signal.SIGTERM if runner_too else st.EXIT_INTERRUPTED)
    assert {k: v["status"] for k, v in st.read_statuses(st.status_path(str(work), 1)).items()} == {"a.tif": "ok"}
    summary = json.loads((work / "status" / "task-0001.attempt-1.json").read_text())
    assert "SIGTERM" in summary["error"]


def _begun_safe(work):
    try:
        return _begun(work, 1)
    except FileNotFoundError:
        return []


def test_a_staged_job_folder_runs_on_its_own(tmp_path, monkeypatch):
    """``stage_job_files`` copies the runner and its package into work/job/; from there (no include/job on
    the path) it runs, and leaves no bytecode in the run's folder (neither this worker's nor its own)."""
    import sciops.project as project

    job_src = tmp_path / "include-job"
    shutil.copytree(Path(st.__file__).parent, job_src, ignore=shutil.ignore_patterns("__pycache__"))
    (job_src / "sciops_node" / "__pycache__").mkdir()
    (job_src / "sciops_node" / "__pycache__" / "contract.cpython-311.pyc").write_bytes(b"stale")
    monkeypatch.setattr(project, "JOB_DIR", job_src)
    macro = tmp_path / "m.ijm"
    macro.write_text('print("hello");\n')
    mpath, work = fake_imagej_run(tmp_path, ["a.tif", "b.tif"], "")
    job = project.stage_job_files(work, macro)
    assert job["node"] == work / "job" / "sciops_node"
    assert sorted(p.name for p in job["node"].iterdir()) == \
        sorted(p.name for p in (job_src / "sciops_node").glob("*.py"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    rc = subprocess.run([sys.executable, str(job["runner"]), "--manifest", str(mpath), "--task", "1"],
                        cwd=tmp_path, env=env, timeout=60).returncode
    assert rc == 0
    got = st.read_statuses(st.status_path(str(work), 1))
    assert {k: v["status"] for k, v in got.items()} == {"a.tif": "ok", "b.tif": "ok"}
    assert not list((work / "job").rglob("__pycache__"))
    # staged again (validate stages, then plan): a module gone from the source is gone from the run too
    (job["node"] / "removed_since.py").write_text("")
    project.stage_job_files(work, macro)
    assert not (job["node"] / "removed_since.py").exists()
