"""sciops.run.choices: the trigger form's projects and macros (issue 37, item 3), from a folder root."""
from __future__ import annotations

import json

from sciops.run import choices
from sciops.run.form import form_params

SHIPPED = ["cell_death", "count_nuclei", "ki67_dab", "percent_positive"]


def test_a_folder_root_is_listed_as_the_dag_is_parsed(storage, tmp_path):
    for name, macros in (("cells", ["seg.ijm", "notes.txt"]), ("tissue", ["seg.ijm", "b.ijm"]), ("empty", [])):
        (storage / name / "src").mkdir(parents=True)
        for m in macros:
            (storage / name / "src" / m).write_text("//")
    (storage / ".sciops").mkdir()                 # sync up's manifests: not a project
    (storage / "bad name").mkdir()                # not a project name
    (storage / "linked").symlink_to(tmp_path)     # a link is never followed
    (storage / "cells" / "src" / "deeper").mkdir()
    assert choices.form_choices() == {"projects": ["cells", "empty", "tissue"],
                                      "macros": SHIPPED + ["src/b.ijm", "src/seg.ijm"]}
    params = form_params()
    assert params["project"][1]["examples"] == ["cells", "empty", "tissue"]
    assert params["macro"][1]["examples"] == SHIPPED + ["src/b.ijm", "src/seg.ijm"]
    assert all(m in params["macro"][1]["description"] for m in SHIPPED)   # the help names every shipped macro


def test_no_root_or_no_project_still_offers_the_shipped_macros(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(tmp_path / "not-there"))
    assert choices.form_choices() == {"projects": [], "macros": SHIPPED}
    assert "examples" not in form_params()["project"][1]   # free text, as before


def test_an_s3_root_reads_only_the_cache_file_and_only_its_own(tmp_path, monkeypatch):
    """No S3 request at parse: the list is the cache file's, and a file written for another root is ignored."""
    cache = tmp_path / "choices.json"
    monkeypatch.setenv("SCIOPS_FORM_CHOICES", str(cache))
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", "s3://lab-bucket/root")
    monkeypatch.setenv("SCIOPS_AWS_CONN_ID", "no_such_connection")   # any S3 request would fail
    assert choices.form_choices() == {"projects": [], "macros": SHIPPED}
    cache.write_text(json.dumps({"root": "s3://lab-bucket/root", "projects": ["cells", "../up", "tissue"],
                                 "macros": {"cells": ["src/a.ijm"], "gone": ["src/old.ijm"]}}))
    assert choices.form_choices() == {"projects": ["cells", "tissue"], "macros": SHIPPED + ["src/a.ijm"]}
    cache.write_text(json.dumps({"root": "s3://other/root", "projects": ["theirs"]}))
    assert choices.form_choices()["projects"] == []
    cache.write_text("{not json")
    assert choices.form_choices()["projects"] == []
