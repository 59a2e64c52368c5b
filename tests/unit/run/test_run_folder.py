"""Writes that never leave half a file, and a full disk said as such."""
from __future__ import annotations

import json
import os
import re

import pytest

from helpers import fill_up
from sciops.errors import StorageError
from sciops.run.project import write_json


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
