"""The processed-images index: keys, content ids, what is new (a local storage root)."""
from __future__ import annotations

import os

from sciops.run import processed
from sciops.storage.root import LocalStorage


def test_keys_content_ids_and_new_images(tmp_path):
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "p" / "input" / "d").mkdir(parents=True)
    for name in ("a.tif", "d/b.tif"):
        (tmp_path / "p" / "input" / name).write_bytes(b"x" * 10)
    assert processed.key("sha", {"a": 1, "b": 2}) == processed.key("sha", {"b": 2, "a": 1})
    assert processed.key("sha", {"a": 1}) != processed.key("sha", {"a": 2}) != processed.key("sha2", {"a": 2})
    ids = processed.content_ids(storage, "p")
    assert set(ids) == {"a.tif", "d/b.tif"} and all(v.startswith("10:") for v in ids.values())
    k = processed.key("sha", {})
    assert processed.read(storage, "p", k) == {}
    assert processed.new_images(sorted(ids), ids, {}) == ["a.tif", "d/b.tif"]
    assert processed.add(storage, "p", k, {"a.tif": ids["a.tif"]}, "run1") == 1
    assert processed.new_images(sorted(ids), ids, processed.read(storage, "p", k)) == ["d/b.tif"]
    path = tmp_path / "p" / "input" / "a.tif"
    os.utime(path, ns=(1, 1))                                  # rewritten: new content id
    assert processed.new_images(sorted(ids), processed.content_ids(storage, "p"),
                                processed.read(storage, "p", k)) == ["a.tif", "d/b.tif"]
    assert (tmp_path / "p" / ".sciops" / "processed" / f"{k}.json").is_file() and storage.runs("p") == []
    (tmp_path / "p" / ".sciops" / "processed" / f"{k}.json").write_text("not json")
    assert processed.read(storage, "p", k) == {}               # unreadable: everything is new, said in the log
