"""Sync down against a hostile destination or bucket (issue 36, items 4 and 9), on real storage roots.

Item 4: a symlink in the destination (a linked ``output/<run>`` folder, a planted ``*.sciops-part``
link, a linked sub-folder, a linked file) is refused and named; the file or folder it points to is
left exactly as it was. Both ways in: a copy from a folder storage root and a download from S3
(moto_server over HTTP, the testbed's).
Item 9: objects whose keys hold ``..``, ``.`` or ``//`` segments (put there by another tool) are
named and skipped by sync down, and refused by validate naming the key, never "cannot reach the
endpoint" or a traceback.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sciops.errors import ConfigError, StorageError
from sciops.storage.sync import sync_down

RUN = "manual__2026-12-01T10-00-00-00-00"
FILES = {"results.csv": b"image,count\na.tif,3\n", "logs/task-0001.attempt-1.log": b"log\n"}


def _snapshot(root: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture(params=["folder", "s3"])
def root_with_run(request, tmp_path, monkeypatch):
    """A storage root (a folder, or an S3 bucket) holding project ``proj``'s run :data:`RUN`."""
    if request.param == "folder":
        from sciops.storage.root import LocalStorage

        storage = LocalStorage(str(tmp_path / "storage"))
        run = tmp_path / "storage" / "proj" / "output" / RUN
        for rel, data in FILES.items():
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            (run / rel).write_bytes(data)
        return storage
    storage = request.getfixturevalue("s3_root")
    for rel, data in FILES.items():
        storage.client.boto.put_object(Bucket=storage.client.bucket, Key=storage.key("proj", "output", RUN, rel),
                                       Body=data)
    return storage


def _link_run_folder(lan: Path, target: Path) -> Path:
    (lan / "output").mkdir(parents=True)
    (lan / "output" / RUN).symlink_to(target, target_is_directory=True)
    return lan / "output" / RUN


def _link_output(lan: Path, target: Path) -> Path:
    lan.mkdir(parents=True)
    (lan / "output").symlink_to(target, target_is_directory=True)
    return lan / "output"


def _link_logs(lan: Path, target: Path) -> Path:
    (lan / "output" / RUN).mkdir(parents=True)
    (lan / "output" / RUN / "logs").symlink_to(target, target_is_directory=True)
    return lan / "output" / RUN / "logs"


def _planted_part(lan: Path, target: Path) -> Path:
    (lan / "output" / RUN).mkdir(parents=True)
    (lan / "output" / RUN / "results.csv.sciops-part").symlink_to(target / "keep.txt")
    return lan / "output" / RUN / "results.csv.sciops-part"


def _linked_file(lan: Path, target: Path) -> Path:
    (lan / "output" / RUN).mkdir(parents=True)
    (lan / "output" / RUN / "results.csv").symlink_to(target / "keep.txt")
    return lan / "output" / RUN / "results.csv"


LINKS = [_link_run_folder, _link_output, _link_logs, _planted_part, _linked_file]


@pytest.mark.parametrize("plant", LINKS, ids=[f.__name__.lstrip("_") for f in LINKS])
def test_sync_down_never_writes_through_a_link(root_with_run, tmp_path, plant):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("the file a link points to\n")
    lan = tmp_path / "lan"
    link = plant(lan, elsewhere)
    before = _snapshot(elsewhere)
    with pytest.raises(StorageError) as err:
        sync_down(root_with_run, "proj", RUN, lan, progress_seconds=0)
    assert str(link) in str(err.value) and "link" in str(err.value)
    assert _snapshot(elsewhere) == before, "sync down wrote through a link"
    assert link.is_symlink()


def test_sync_down_still_writes_a_plain_folder(root_with_run, tmp_path):
    lan = tmp_path / "lan"
    stats = sync_down(root_with_run, "proj", RUN, lan, progress_seconds=0)
    assert stats.transferred == len(FILES)
    assert {rel: (lan / "output" / RUN / rel).read_bytes() for rel in FILES} == FILES


# -- item 9: keys that are no path ------------------------------------------------------------------------------
BAD_KEYS = ["../escape.txt", "./dot.txt", "sub//double.txt", "a/../../up.txt"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_sync_down_names_and_skips_unsafe_keys(s3_root, tmp_path, bad):
    boto, bucket = s3_root.client.boto, s3_root.client.bucket
    for rel, data in FILES.items():
        boto.put_object(Bucket=bucket, Key=s3_root.key("proj", "output", RUN, rel), Body=data)
    key = s3_root.key("proj", "output", RUN) + "/" + bad
    boto.put_object(Bucket=bucket, Key=key, Body=b"planted by another tool\n")
    lan = tmp_path / "lan" / "deep"
    before = _snapshot(tmp_path)
    stats = sync_down(s3_root, "proj", RUN, lan, progress_seconds=0)
    assert stats.transferred == len(FILES)
    assert key in stats.unsafe_keys and "segment" in stats.unsafe_keys[key]
    from sciops.storage.sync import summary_lines

    assert any(key in line for line in summary_lines(stats))
    after = _snapshot(tmp_path)
    made = {rel for rel in set(after) - set(before)}
    assert all(rel.startswith(f"lan/deep/output/{RUN}") or rel in ("lan", "lan/deep", "lan/deep/output", "cache")
               or rel.startswith("cache/") for rel in made), made


@pytest.mark.parametrize("bad", ["input/../x.tif", "input/./y.tif", "input//z.tif"])
def test_validate_refuses_unsafe_keys(s3_root, tmp_path, bad):
    from sciops.phases import checks
    from sciops.storage.sync import sync_up

    lan = tmp_path / "lan"
    (lan / "input").mkdir(parents=True)
    (lan / "src").mkdir()
    (lan / "input" / "a.tif").write_bytes(b"II*\x00")
    sync_up(s3_root, lan, "proj")
    key = s3_root.key("proj") + "/" + bad   # as another tool writes it (SciOps makes no such key)
    s3_root.client.boto.put_object(Bucket=s3_root.client.bucket, Key=key, Body=b"x")
    work = Path(os.environ["SCIOPS_WORK_ROOT"])
    before = _snapshot(work)
    with pytest.raises(ConfigError) as err:
        checks.validate({"project": "proj", "smoke_test": False}, "manual__keys")
    assert err.value.fields == ["project"], err.value
    assert key in str(err.value) and "segment" in str(err.value)
    assert "cannot reach" not in str(err.value)
    assert _snapshot(work) == before
