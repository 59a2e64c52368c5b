"""One run, one folder: the run id → folder rule, the folder's marker, and writes that never leave half a file."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
import os
import re

import pytest

from helpers import fill_up
from sciops.errors import ConfigError, StorageError
from sciops.run.project import claim_run_dir, safe_run_id, write_json

#: Run ids as Airflow makes them (dag.test, the UI, the scheduler, a run without a logical date) and as
#: people and DAGs give them, including the pairs the old rule sent to one folder.
RUN_IDS = [
    "manual__2026-11-26T22:50:00.123456+00:00", "manual__2026-11-26T22:50:00+00:00",
    "scheduled__2026-11-26T02:00:00+00:00", "asset_triggered__2026-11-26T22:50:00.000001+00:00",
    "manual__2026-11-26T22:50:00.123456+00:00_AbCd1234", "nightly__20261126T020000__0",
    "x~1", "x+1", "x-1", "x:1", "x 1", "x--1", "-x-1", "x-1.", "x-1-", ".x-1",
    "manual__2026-11-26T22-50-00.123456-00-00",   # an Airflow id's folder name given as a run id
    safe_run_id("x~1"), "x-1-deadbeef",           # kind-3 folder names given as run ids
    "run", "", ".", "..", "a" * 119, "a" * 120, "a" * 121, "a" * 250, "a" * 249 + "~",
    "é", "e", "über~run", "x/1", "x\\1",
]


def old_rule(run_id: str) -> str:
    """The rule before: not injective (``x~1`` and ``x+1`` both ``x-1``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:120] or "run"


def test_the_folder_rule_is_injective_and_keeps_airflows_folder_names():
    folders = {run_id: safe_run_id(run_id) for run_id in RUN_IDS}
    assert len(set(folders.values())) == len(RUN_IDS), {f: [i for i in RUN_IDS if folders[i] == f]
                                                         for f in folders.values()}
    for run_id, folder in folders.items():
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", folder) and len(folder) <= 120, (run_id, folder)
    # Airflow's own ids and ids that are folder names already keep the folders they always had
    for run_id in RUN_IDS[:6] + ["x-1", "run"]:
        assert folders[run_id] == old_rule(run_id), run_id
    assert folders["x~1"] != folders["x+1"] and folders["x~1"].startswith("x-1-")
    assert safe_run_id("x~1") == safe_run_id("x~1")   # the same id, the same folder, every time


def test_a_retried_validate_finds_its_folder_and_another_run_is_refused_naming_both(tmp_path):
    from sciops.run.project import RUN_MARKER, claim_run_dir

    run_dir = tmp_path / "output" / "x-1"
    assert claim_run_dir(run_dir, "x~1") == run_dir
    assert (run_dir / RUN_MARKER).read_text() == "x~1\n"
    (run_dir / "summary.csv").write_text("image,count\na.tif,3\n")
    claim_run_dir(run_dir, "x~1")   # the same run again: fine
    with pytest.raises(ConfigError) as err:
        claim_run_dir(run_dir, "x+1")
    assert err.value.fields == ["run_id"] and "'x~1'" in str(err.value) and "'x+1'" in str(err.value)
    assert (run_dir / RUN_MARKER).read_text() == "x~1\n"
    assert (run_dir / "summary.csv").read_text() == "image,count\na.tif,3\n"


def test_a_folder_from_before_markers_is_its_runs_only(tmp_path):
    from sciops.run.project import RUN_MARKER, claim_run_dir

    recorded = tmp_path / "recorded"
    (recorded / "work").mkdir(parents=True)
    (recorded / "run.json").write_text(json.dumps({"airflow_run_id": "x~1", "status": "success"}))
    with pytest.raises(ConfigError, match="'x~1'.*'x-1'"):
        claim_run_dir(recorded, "x-1")
    claim_run_dir(recorded, "x~1")   # its own run (a retry across the upgrade) takes it
    validated = tmp_path / "validated"
    (validated / "work" / "phases").mkdir(parents=True)   # validate of an older SciOps ran here: whose is unknown
    with pytest.raises(ConfigError, match="no marker"):
        claim_run_dir(validated, "x-1")
    assert not (validated / RUN_MARKER).exists() and not (recorded / "x").exists()
    fresh = tmp_path / "fresh"
    (fresh / "work").mkdir(parents=True)   # what a backend's own checks may write first (pcluster's config)
    claim_run_dir(fresh, "manual__a")


def _claim(run_dir, run_id, go):
    go.wait()
    try:
        claim_run_dir(run_dir, run_id)
        return run_id
    except ConfigError:
        return None


def test_of_runs_that_reach_one_folder_at_once_exactly_one_has_it(tmp_path):
    from sciops.run.project import RUN_MARKER

    # Threads released together by a barrier: O_EXCL decides between them as between processes, and a forked
    # pool in a pytest process that runs other threads (an api-server's, a trigger's) can deadlock in the child.
    run_dir = tmp_path / "output" / "same"
    go = threading.Barrier(8)
    with ThreadPoolExecutor(8) as pool:
        won = [r for r in pool.map(lambda i: _claim(run_dir, f"run~{i}", go), range(8)) if r]
    assert len(won) == 1 and (run_dir / RUN_MARKER).read_text() == won[0] + "\n"


def test_a_full_disk_is_said_with_the_path_and_what_was_free_and_leaves_nothing(small_tmpfs):
    from sciops.phases import phase, phase_path

    write_json(small_tmpfs / "run" / "run.json", {"status": "before"})
    fill_up(small_tmpfs)
    with pytest.raises(StorageError) as err:
        write_json(small_tmpfs / "run" / "run.json", {"status": "after", "pad": "x" * 100_000})
    said = str(err.value)
    assert said.startswith("no space left on device") and str(small_tmpfs / "run" / "run.json") in said
    assert re.search(r"\b[\d,]+ bytes free of 31,457,280 on the filesystem holding " + re.escape(str(small_tmpfs)),
                     said), said
    assert json.loads((small_tmpfs / "run" / "run.json").read_text()) == {"status": "before"}   # the old one, whole
    from sciops.run.project import write_atomic

    with pytest.raises(StorageError, match="no space left on device"):
        write_atomic(small_tmpfs / "report.html", "<html>" + "x" * 100_000)
    assert not (small_tmpfs / "report.html").exists()
    # a phase's own error is the full disk, not the record it could not write afterwards
    (small_tmpfs / "run" / "work" / "phases").mkdir(parents=True)
    os.truncate(small_tmpfs / "ballast", os.path.getsize(small_tmpfs / "ballast") - 8192)   # two pages
    with pytest.raises(StorageError, match="no space left on device") as err:
        with phase(small_tmpfs / "run", "collate"):
            (small_tmpfs / "run" / "results.csv").write_bytes(b"x" * 100_000)
    assert f"could not write in {small_tmpfs / 'run'} (" in str(err.value)   # Python's write error names no file
    assert phase_path(small_tmpfs / "run", "collate").exists()   # the start fitted in what was left
    assert not [n for _, _, names in os.walk(small_tmpfs) for n in names if n.endswith(".tmp")]
