"""Stand-ins the task runner's tests share: a fake ImageJ speaking the driver's protocol, status lines
as a task killed whole leaves them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sciops_node import contract


def _fake_imagej_run(tmp_path, images, cases):
    """A manifest whose "Fiji" is a shell script speaking the driver's protocol.

    For every image of the job file it prints BEGIN (with the JVM's secret, as the driver does), runs ``cases`` (shell ``case`` arms on
    ``$input``; the default writes a results.csv of one row), then END. Fiji's argv puts the job file 10th.
    """
    fake = tmp_path / "fake-imagej"
    fake.write_text("""#!/bin/sh
job="${10}"
tag="SCIOPS_$(head -n 1 "$job" | cut -d= -f2)_"   # the JVM's secret, as the driver reads it
echo "${tag}VERSION\t9.99z"
tail -n +4 "$job" | while IFS="$(printf '\\t')" read -r input out argument; do
  [ -d "$out" ] || mkdir "$out"   # as the driver does: the runner may not have made it yet
  echo "${tag}BEGIN\t$input"
  case "$input" in
    %s
    *) printf 'count\n1\n' > "$out/results.csv" ;;
  esac
  echo "${tag}END\t$input\t5\t"
done
echo "${tag}DONE"
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


def _died_under(work, image, attempt, done=()):
    """What a task killed whole (a memory kill takes the runner too) leaves: a begin line and no end."""
    path = contract.status_path(str(work), 1)
    for img in done:
        contract.append_status(path, {"image": img, "status": "ok", "attempt": attempt, "task": 1, "seconds": 1})
    contract.append_status(path, {"image": image, "status": contract.BEGIN, "attempt": attempt, "task": 1})


def _begun(work, attempt):
    recs = [json.loads(line) for line in Path(contract.status_path(str(work), 1)).read_text().splitlines()]
    return [r["image"] for r in recs if r["status"] == contract.BEGIN and r["attempt"] == attempt]


def _begun_safe(work):
    try:
        return _begun(work, 1)
    except FileNotFoundError:
        return []


@pytest.fixture
def fake_imagej_run():
    """``fake_imagej_run(tmp_path, images, cases)`` -> (manifest path, work dir): see :func:`_fake_imagej_run`."""
    return _fake_imagej_run


@pytest.fixture
def died_under():
    """``died_under(work, image, attempt, done=())``: the status lines of a task killed under ``image``."""
    return _died_under


@pytest.fixture
def begun():
    """``begun(work, attempt)``: the images task 1's ``attempt`` began, in order."""
    return _begun


@pytest.fixture
def begun_safe():
    """``begun_safe(work)``: the images task 1's first attempt began so far ([] before its first line)."""
    return _begun_safe
