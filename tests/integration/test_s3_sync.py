"""Sync up/down against a real S3 endpoint (moto_server over HTTP on 127.0.0.1)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from sciops.errors import ConfigError, StorageError
from sciops.storage.sync import SyncManifest, sync, sync_down, sync_up
from sciops.storage.trees import Entry, LocalTree, S3Tree, file_etag, safe_rel

NAMES = ["input/plate 1/well A1.tif", "input/plate 1/sub dir/é-ü 細胞.tif", "input/empty.tif", "input/big.tif",
         "src/macro.ijm", "project.yaml"]


def make_lan_project(root: Path) -> Path:
    for i, name in enumerate(NAMES):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("empty.tif"):
            p.write_bytes(b"")
        elif name.endswith("big.tif"):
            p.write_bytes(os.urandom(9 * 1024 * 1024 + 123))  # over 8 MiB: two parts
        else:
            p.write_bytes(f"{name} {i}\n".encode() * 50)
    (root / "output" / "old-run").mkdir(parents=True)
    (root / "output" / "old-run" / "results.csv").write_text("stays on the LAN\n")
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_incremental_and_multipart(s3_root, tmp_path, monkeypatch):
    lan = make_lan_project(tmp_path / "lan")
    first = sync_up(s3_root, lan, "proj", progress_seconds=0)
    assert first.transferred == len(NAMES) and first.skipped == 0
    remote = s3_root.tree("proj").list()
    assert set(remote) == set(NAMES)  # output/ stays behind
    assert remote["input/big.tif"].etag.endswith("-2")  # multipart, ETag checked locally the same way
    assert remote["input/big.tif"].etag == file_etag(lan / "input/big.tif", 8 * 1024 * 1024)
    assert remote["input/empty.tif"].size == 0
    # its parts' ETags are their MD5s here, so the object's ETag says it all: no MD5 computed nor tagged,
    # and the upload left the file's multipart ETag in the checksum cache (a resync reads no file)
    assert s3_root.client.get_tags(s3_root.key("proj", "input/big.tif")) == {}
    import sciops.storage.trees

    def no_reading(*a, **kw):
        raise AssertionError("a no-op resync read a file")

    with monkeypatch.context() as m:
        m.setattr(sciops.storage.trees, "file_etag", no_reading)
        assert sync_up(s3_root, lan, "proj").transferred == 0  # nothing changed: nothing sent
    (lan / "input/plate 1/well A1.tif").write_bytes(b"changed")
    again = sync_up(s3_root, lan, "proj")
    assert (again.transferred, again.transferred_paths) == (1, ["input/plate 1/well A1.tif"])

    # the way down: the whole prefix into a fresh folder, byte for byte
    copy = tmp_path / "copy"
    down = sync(s3_root.tree("proj"), LocalTree(copy))
    assert down.transferred == len(NAMES)
    assert files_of(copy) == {k: v for k, v in files_of(lan).items() if not k.startswith("output/")}
    # a second sync down transfers nothing, even with the checksum cache gone (ETags are recomputed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
    assert sync(s3_root.tree("proj"), LocalTree(copy)).transferred == 0


def test_sync_down_writes_only_the_run_folder(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "results.csv").write_text("a,b\n1,2\n")
    (out / "sub" / "x.csv").write_text("x\n")
    sync(LocalTree(out), s3_root.tree("proj", "output", "run-1"))
    before = {p: p.stat().st_mtime_ns for p in (lan / "input").rglob("*")}
    stats = sync_down(s3_root, "proj", "run-1", lan)
    assert stats.transferred == 2
    assert (lan / "output/run-1/results.csv").read_text() == "a,b\n1,2\n"
    assert (lan / "output/old-run/results.csv").exists()  # nothing deleted at the destination
    assert before == {p: p.stat().st_mtime_ns for p in (lan / "input").rglob("*")}  # input/ untouched


def test_delete_only_when_asked(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    (lan / "src/macro.ijm").unlink()
    assert "src/macro.ijm" in s3_root.tree("proj").list()
    sync_up(s3_root, lan, "proj")
    assert "src/macro.ijm" in s3_root.tree("proj").list()
    deleting = sync_up(s3_root, lan, "proj", delete=True, verify=False)
    assert deleting.deleted == 1 and deleting.destination_from == "listing"  # --delete always lists
    assert "src/macro.ijm" not in s3_root.tree("proj").list()
    assert "src/macro.ijm" not in SyncManifest(s3_root, "proj").read()["objects"]


def test_interrupted_multipart_upload_resumes_with_its_parts(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    big = lan / "input/big.tif"
    key = s3_root.key("proj", "input/big.tif")
    client = s3_root.client
    upload = client.create_multipart(key)  # an earlier sync got as far as part 1, then died
    client.upload_part(key, upload, 1, big.read_bytes()[:8 * 1024 * 1024], 8 * 1024 * 1024)
    stats = sync_up(s3_root, lan, "proj")
    assert stats.parts_reused == 1
    assert s3_root.tree("proj").list()["input/big.tif"].etag == file_etag(big, 8 * 1024 * 1024)
    assert client.list_uploads(key) == []


def test_interrupted_download_resumes(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    dest = tmp_path / "down"
    partial = dest / "input/big.tif.sciops-part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes((lan / "input/big.tif").read_bytes()[:5_000_000])
    stats = sync(s3_root.tree("proj"), LocalTree(dest), include=["input/big.tif"])
    assert stats.resumed_bytes == 5_000_000
    assert (dest / "input/big.tif").read_bytes() == (lan / "input/big.tif").read_bytes()
    assert not partial.exists()


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    return subprocess.Popen([sys.executable, "-m", "sciops", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_sync_resumes_where_it_stopped(s3_root, tmp_path):
    lan = tmp_path / "lan"
    (lan / "input").mkdir(parents=True)
    for i in range(400):
        (lan / "input" / f"img{i:04d}.tif").write_bytes(os.urandom(2000))
    proc = _cli("sync", "up", str(lan), "--project", "proj", "--workers", "2")
    deadline = time.time() + 60
    while time.time() < deadline and len(s3_root.tree("proj").list()) < 40:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    there = len(s3_root.tree("proj").list())
    assert 0 < there < 400, there
    # the killed sync had marked the manifest unfinished: even the fast mode lists the bucket
    assert SyncManifest(s3_root, "proj").read()["complete"] is False
    stats = sync_up(s3_root, lan, "proj", verify=False)
    assert stats.destination_from == "listing"
    assert stats.skipped >= there - 2 and stats.transferred == 400 - stats.skipped
    assert len(s3_root.tree("proj").list()) == 400


def test_progress_line(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    lines = []
    sync_up(s3_root, lan, "proj", progress_seconds=0, emit=lines.append)
    assert len(lines) >= len(NAMES)
    assert "files" in lines[-1] and "MiB/s" in lines[-1] and "ETA" in lines[-1], lines[-1]
    assert f"{len(NAMES)}/{len(NAMES)} files" in lines[-1]


def test_paths_outside_the_root_are_refused(s3_root, tmp_path):
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(StorageError):
            safe_rel(bad)
    for bad in ("..", "a/../b", "/abs", "a//b"):
        with pytest.raises(StorageError):
            s3_root.key("proj", bad)
    with pytest.raises(StorageError):
        LocalTree(tmp_path).path("../outside")
    assert s3_root.key("proj", "output", "r1") == "labroot/proj/output/r1"


def test_credentials_never_in_logs(s3_endpoint, s3_root, tmp_path, caplog, monkeypatch):
    secret = s3_endpoint["sciops_s3_auth"]["password"]
    lan = make_lan_project(tmp_path / "lan")
    from sciops.storage.root import S3Storage

    auth = S3Storage(f"s3://{s3_root.bucket}-a", "sciops_s3_auth")
    auth.client.create_bucket()
    with caplog.at_level(logging.DEBUG):
        sync_up(auth, lan, "proj", progress_seconds=0)
        proc = _cli("sync", "up", str(lan), "--project", "p2", "--storage-root", auth.url, "--conn-id",
                    "sciops_s3_auth")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        wrong = S3Storage(auth.url, "wrong_secret")
        monkeypatch.setenv("AIRFLOW_CONN_WRONG_SECRET", os.environ["AIRFLOW_CONN_SCIOPS_S3_AUTH"].replace(secret, "nope"))
        with pytest.raises(ConfigError) as err:
            wrong.check()
    assert err.value.fields == ["aws_conn_id"] and "refused" in str(err.value)
    assert len(auth.tree("p2").list()) == len(NAMES)
    for text in (caplog.text, out, str(err.value)):
        assert secret not in text and "nope" not in text


@pytest.mark.parametrize("case", ["no_bucket", "endpoint_down", "wrong_credentials"])
def test_unreachable_storage_is_a_config_error(case, s3_endpoint, s3_root, monkeypatch):
    import json

    from sciops.storage.root import S3Storage

    conn = dict(s3_endpoint["sciops_s3_auth"] if case == "wrong_credentials" else s3_endpoint["sciops_s3"])
    if case == "endpoint_down":
        conn["extra"] = {**conn["extra"], "endpoint_url": "http://127.0.0.1:9"}
    if case == "wrong_credentials":
        conn["password"] = "not-the-secret"
    monkeypatch.setenv("AIRFLOW_CONN_CASE", json.dumps(conn))
    monkeypatch.setattr("sciops.storage.s3.ATTEMPTS", 1)
    bucket = "no-such-bucket-here" if case == "no_bucket" else s3_root.bucket
    with pytest.raises(ConfigError) as err:
        S3Storage(f"s3://{bucket}", "case").check()
    field = "aws_conn_id" if case == "wrong_credentials" else "storage_root"
    assert err.value.fields == [field]
    assert {"no_bucket": "does not exist", "endpoint_down": "cannot reach",
            "wrong_credentials": "refused"}[case] in str(err.value)
    assert "not-the-secret" not in str(err.value)


def test_projects_and_runs_are_listed_by_folder(s3_root, tmp_path):
    """Project and run names come from delimiter listings (CommonPrefixes), not from every object."""
    from sciops.storage.root import LocalStorage

    for name in ("alpha", "beta"):
        sync_up(s3_root, make_lan_project(tmp_path / name), name)
    sync(LocalTree(tmp_path / "alpha" / "output"), s3_root.tree("alpha", "output"))
    assert s3_root.projects() == ["alpha", "beta"]
    assert s3_root.runs("alpha") == ["old-run"] and s3_root.runs("beta") == []
    out = _cli("ls", "alpha", "--storage-root", s3_root.url, "--conn-id", "sciops_s3").communicate(timeout=60)[0]
    assert out.strip() == "old-run"
    local = LocalStorage(str(tmp_path))
    assert "alpha" in local.projects() and local.runs("alpha") == ["old-run"]


# -- the sync manifest: a sync up that need not list the bucket ----------------------------------
def _listing(storage, project):
    return {rel: (e.size, e.etag) for rel, e in storage.tree(project).list().items() if not rel.startswith("output/")}


def _manifest(storage, project):
    m = SyncManifest(storage, project).read()
    return m["complete"], {rel: (e.size, e.etag) for rel, e in m["objects"].items()}


def test_manifest_matches_the_bucket_and_spares_the_listing(s3_root, tmp_path, monkeypatch):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    sync(LocalTree(lan / "output"), s3_root.tree("proj", "output"))  # a run's results: not sync up's
    assert _manifest(s3_root, "proj") == (True, _listing(s3_root, "proj"))
    assert s3_root.projects() == ["proj"]  # .sciops/ (where manifests live) is not a project

    listed = []
    real_list = S3Tree.list
    monkeypatch.setattr(S3Tree, "list", lambda self: listed.append(str(self)) or real_list(self))
    noop = sync_up(s3_root, lan, "proj", verify=False)
    assert (noop.transferred, listed) == (0, [])
    assert noop.destination_from.startswith("sync manifest of ")
    (lan / "input/plate 1/well A1.tif").write_bytes(b"changed")
    (lan / "input/new.tif").write_bytes(b"new")
    changed = sync_up(s3_root, lan, "proj", verify=False)
    assert sorted(changed.transferred_paths) == ["input/new.tif", "input/plate 1/well A1.tif"] and listed == []
    monkeypatch.setattr(S3Tree, "list", real_list)
    assert _manifest(s3_root, "proj") == (True, _listing(s3_root, "proj"))
    assert s3_root.client.get_bytes(s3_root.key("proj", "input/plate 1/well A1.tif")) == b"changed"


def test_a_change_made_with_another_tool_is_repaired_by_verify(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    s3_root.client.delete(s3_root.key("proj", "src/macro.ijm"))  # e.g. `aws s3 rm`, unknown to the manifest
    assert sync_up(s3_root, lan, "proj", verify=False).transferred == 0  # the documented blind spot
    repaired = sync_up(s3_root, lan, "proj")  # what the DAG's sync_up and `sciops sync up --verify` do
    assert repaired.transferred_paths == ["src/macro.ijm"] and repaired.destination_from == "listing"
    assert _manifest(s3_root, "proj") == (True, _listing(s3_root, "proj"))


def test_an_unreadable_or_failed_manifest_is_not_trusted(s3_root, tmp_path, caplog):
    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    key = s3_root.key(".sciops", "sync", "proj.json.gz")
    s3_root.client.put(key, b"not gzip", 8)
    with caplog.at_level(logging.WARNING):
        stats = sync_up(s3_root, lan, "proj", verify=False)
    assert stats.destination_from == "listing" and stats.transferred == 0
    assert "unreadable sync manifest" in caplog.text
    assert _manifest(s3_root, "proj") == (True, _listing(s3_root, "proj"))  # rewritten from the listing

    # a sync that fails part-way (a file vanished between the listing and its upload) leaves the
    # manifest marked unfinished, so the next sync lists the bucket
    (lan / "input/new.tif").write_bytes(b"new")
    local = LocalTree(lan).list()
    local["input/vanished.tif"] = Entry(5, None, 1)
    with pytest.raises(StorageError, match="vanished.tif"):
        sync_up(s3_root, lan, "proj", verify=False, source=local)
    assert SyncManifest(s3_root, "proj").read()["complete"] is False
    after = sync_up(s3_root, lan, "proj", verify=False)
    assert after.destination_from == "listing" and after.transferred == 0  # new.tif went up before the failure
    assert _manifest(s3_root, "proj") == (True, _listing(s3_root, "proj"))


def test_cli_sync_up_trusts_the_manifest_and_verify_lists(s3_root, tmp_path):
    lan = make_lan_project(tmp_path / "lan")
    base = ("sync", "up", str(lan), "--project", "proj", "--storage-root", s3_root.url, "--conn-id", "sciops_s3")
    first = _cli(*base).communicate(timeout=120)[0]
    assert f"{len(NAMES)} transferred" in first and "not listed" not in first
    second = _cli(*base).communicate(timeout=120)[0]
    assert "0 transferred" in second and "the bucket was not listed" in second and "--verify" in second
    third = _cli(*base, "--verify").communicate(timeout=120)[0]
    assert "0 transferred" in third and "not listed" not in third


def test_expiring_credentials_are_renewed_before_signing(s3_endpoint, s3_root, monkeypatch):
    """Keys of an assumed role or the instance profile expire within hours; a long sync renews them."""
    import datetime as dt
    import json

    from botocore.credentials import RefreshableCredentials

    from sciops.storage.credentials import connection_credentials
    from sciops.storage.s3 import Credentials, S3Client

    good = s3_endpoint["sciops_s3_auth"]
    renewals = []

    def renew():
        renewals.append(1)
        return {"access_key": good["login"], "secret_key": good["password"], "token": None,
                "expiry_time": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()}

    expiring = RefreshableCredentials.create_from_metadata(  # keys that expire in a minute (and are stale)
        {"access_key": "AKIAEXPIRED", "secret_key": "old", "token": None,
         "expiry_time": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)).isoformat()},
        refresh_using=renew, method="test")
    creds = Credentials("AKIAEXPIRED", "old", source=expiring)
    client = S3Client(f"{s3_root.bucket}-renew", creds, endpoint_url=good["extra"]["endpoint_url"])
    client.create_bucket()  # the auth endpoint refuses the old keys: this used the new ones
    client.put("k", b"x", 1)
    assert renewals and client.get_bytes("k") == b"x"

    # a connection without keys goes through the provider's hook, and keeps the renewing source
    monkeypatch.setenv("AIRFLOW_CONN_NO_KEYS", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    found, region, _ = connection_credentials("no_keys")
    assert (found.current().access_key, region) == ("AKIAFROMENV", "eu-west-1") and found.source is not None


def test_listings_leave_out_the_folders_a_sync_does_not_touch(s3_root, tmp_path, monkeypatch):
    """A project's output/ holds every past run: sync up, validate and stage in never list it."""
    from sciops.storage.s3 import S3Client

    lan = make_lan_project(tmp_path / "lan")
    sync_up(s3_root, lan, "proj")
    sync(LocalTree(lan / "output"), s3_root.tree("proj", "output"))
    everything = s3_root.tree("proj").list()
    assert "output/old-run/results.csv" in everything

    listed = []
    real = S3Client.list
    monkeypatch.setattr(S3Client, "list", lambda self, prefix="": listed.append(prefix) or real(self, prefix))
    tree = s3_root.tree("proj")
    assert tree.list(exclude=["output"]) == {k: v for k, v in everything.items() if not k.startswith("output/")}
    assert sorted(listed) == ["labroot/proj/input/", "labroot/proj/src/"]
    listed.clear()
    from sciops.storage.root import PROJECT_PARTS

    parts = tree.list(include=PROJECT_PARTS)
    assert set(parts) == set(NAMES) and sorted(listed) == ["labroot/proj/input/", "labroot/proj/src/"]
    listed.clear()
    assert sync_up(s3_root, lan, "proj").transferred == 0 and "labroot/proj/output/" not in listed
    # the same rule on a folder: output/ is not walked, the selection is the same
    assert set(LocalTree(lan).list(exclude=["output"])) == set(NAMES)
    assert set(LocalTree(lan).list(include=["input/plate 1"])) == {n for n in NAMES if n.startswith("input/plate 1/")}


def test_a_dotted_bucket_name_syncs_up_and_down(s3_endpoint, tmp_path, monkeypatch):
    """Bucket names with dots are allowed (and common: ``lab.images``); they are addressed path-style."""
    import uuid

    from sciops.storage.root import S3Storage

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    storage = S3Storage(f"s3://sciops.dotted.{uuid.uuid4().hex[:8]}/lab.root", "sciops_s3")
    storage.client.create_bucket()
    storage.check()
    lan = make_lan_project(tmp_path / "lan")
    assert sync_up(storage, lan, "proj").transferred == len(NAMES)
    assert storage.projects() == ["proj"] and sync_up(storage, lan, "proj").transferred == 0
    copy = tmp_path / "copy"
    assert sync(storage.tree("proj"), LocalTree(copy)).transferred == len(NAMES)
    assert files_of(copy) == {k: v for k, v in files_of(lan).items() if not k.startswith("output/")}


def test_sse_kms_etags_do_not_make_unchanged_files_travel_again(s3_endpoint, tmp_path, monkeypatch):
    """A bucket with default SSE-KMS encryption gives ETags that are not the MD5 (the testbed's kms endpoint).

    Unchanged files are not sent again, from this machine (it remembers which ETags it sent) nor
    from another one (a fresh checksum cache: the MD5 stored with each object settles it), in
    either direction; a changed file is sent, and only it.
    """
    import hashlib
    import shutil
    import uuid

    from sciops.storage.root import S3Storage

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    storage = S3Storage(f"s3://sciops-kms-{uuid.uuid4().hex[:8]}", "sciops_s3_kms")
    storage.client.create_bucket()
    lan = make_lan_project(tmp_path / "lan")
    assert sync_up(storage, lan, "proj").transferred == len(NAMES)
    remote = storage.tree("proj").list()
    small = "input/plate 1/well A1.tif"
    assert remote[small].etag != hashlib.md5((lan / small).read_bytes()).hexdigest()   # the endpoint is KMS-like
    assert remote["input/big.tif"].etag != file_etag(lan / "input/big.tif", 8 * 1024 * 1024)
    # the big file's MD5 was computed while its parts went out, so it is a tag, not metadata
    big_key = storage.tree("proj").key("input/big.tif")
    big_md5 = hashlib.md5((lan / "input/big.tif").read_bytes()).hexdigest()
    assert "sciops-md5" not in storage.client.head(big_key).meta
    assert storage.client.get_tags(big_key) == {"sciops-md5": big_md5}

    assert sync_up(storage, lan, "proj").transferred == 0            # this machine sent them
    shutil.rmtree(tmp_path / "cache")                                 # another machine: no cache
    assert sync_up(storage, lan, "proj").transferred == 0
    copy = tmp_path / "copy"
    assert sync_down_tree(storage, copy).transferred == len(NAMES)
    assert files_of(copy) == {k: v for k, v in files_of(lan).items() if not k.startswith("output/")}
    assert sync_down_tree(storage, copy).transferred == 0
    shutil.rmtree(tmp_path / "cache")
    assert sync_down_tree(storage, copy).transferred == 0

    (lan / small).write_bytes(b"changed, same name")
    again = sync_up(storage, lan, "proj")
    assert again.transferred_paths == [small]
    assert sync_down_tree(storage, copy).transferred_paths == [small]
    assert (copy / small).read_bytes() == b"changed, same name"


def sync_down_tree(storage, folder: Path):
    return sync(storage.tree("proj"), LocalTree(folder))
