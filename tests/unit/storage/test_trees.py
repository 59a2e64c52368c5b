"""LocalTree.list: what a folder's listing holds (validate lists a project's input/ with it once a run)."""
from __future__ import annotations

import os

from sciops.storage.trees import PARTIAL_SUFFIX, LocalTree


def test_listing_holds_files_and_in_tree_links_skips_partials_outside_links_and_linked_folders(tmp_path, caplog):
    root, outside = tmp_path / "proj", tmp_path / "elsewhere"
    (root / "input" / "plate2").mkdir(parents=True)
    (root / "input" / "plate1").mkdir()
    (root / "output").mkdir()
    outside.mkdir()
    (outside / "id_rsa").write_text("secret")
    (outside / "more.tif").write_bytes(b"x" * 3)
    (root / "project.yaml").write_text("macro: count_nuclei\n")
    (root / "input" / "plate1" / "a.tif").write_bytes(b"a" * 5)
    (root / "input" / "plate2" / "b.tif").write_bytes(b"b" * 7)
    (root / "input" / "plate2" / ("c.tif" + PARTIAL_SUFFIX)).write_bytes(b"half")   # an unfinished download
    (root / "output" / "r.csv").write_text("x\n")
    (root / "input" / "same.tif").symlink_to(root / "input" / "plate1" / "a.tif")  # stays in the tree: listed
    (root / "input" / "key").symlink_to(outside / "id_rsa")                         # leads outside: skipped
    (root / "input" / "broken.tif").symlink_to(root / "input" / "gone.tif")          # nothing behind it
    (root / "input" / "linked").symlink_to(outside, target_is_directory=True)        # a folder link: not walked

    listed = LocalTree(root).list()
    assert sorted(listed) == ["input/plate1/a.tif", "input/plate2/b.tif", "input/same.tif", "output/r.csv",
                              "project.yaml"]
    # folders come after a folder's own files, in name order (os.walk's order)
    assert [k for k in listed if k.startswith("input/plate")] == ["input/plate1/a.tif", "input/plate2/b.tif"]
    assert listed["input/plate2/b.tif"].size == 7 and listed["input/same.tif"].size == 5
    assert listed["input/plate1/a.tif"].mtime_ns == os.stat(root / "input" / "plate1" / "a.tif").st_mtime_ns
    assert "input/key" in caplog.text and "id_rsa" not in "".join(listed)

    assert sorted(LocalTree(root).list(include=["input"])) == ["input/plate1/a.tif", "input/plate2/b.tif",
                                                                 "input/same.tif"]
    assert sorted(LocalTree(root).list(exclude=["output", "input/plate2"])) == ["input/plate1/a.tif",
                                                                                 "input/same.tif", "project.yaml"]
    assert LocalTree(tmp_path / "none").list() == {}
