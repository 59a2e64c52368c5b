"""The head node's ``aws s3 sync`` (existing backend: stage_in, stage_out) against a throttling S3 endpoint.

Real SSH to the testbed head node, its own AWS CLI (v2) and credentials, moto_server behind
:class:`flaky_s3.FlakyS3`, which answers every request ``503 SlowDown`` three times before it lets it
through: the CLI's default (3 attempts) gives up; SciOps' retry settings ride it out.
"""
from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

from flaky_s3 import FlakyS3
from sciops.clusters.existing import ExistingBackend
from sciops.storage.root import S3Storage
from sciops.storage.sync import sync_up


def files(root) -> dict[str, str]:
    """rel path → MD5, which is a small object's ETag too."""
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_the_head_nodes_aws_s3_sync_rides_out_slowdowns(gridengine, s3_endpoint, s3_root, shared_storage, tmp_path,
                                                         monkeypatch):
    lan = tmp_path / "lan"
    for name in ("input/a.tif", "input/plate 1/b.tif", "src/count.ijm", "project.yaml"):
        (lan / name).parent.mkdir(parents=True, exist_ok=True)
        (lan / name).write_bytes(os.urandom(2048) + name.encode())
    sync_up(s3_root, lan, "cells")                                  # straight to moto: the project in the bucket
    run_dir = shared_storage / "cells" / "output" / "r1"
    for name in ("results.csv", "work/status/task-0001.jsonl", "logs/t.1.out"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(f"{name}\n" * 100)
    backend = ExistingBackend("sciops_cluster")
    backend.cfg = SimpleNamespace(cluster_storage_root=None)        # the head node sees these paths as they are

    with FlakyS3(s3_endpoint["sciops_s3"]["extra"]["endpoint_url"], slowdowns=3) as proxy:
        conn = json.loads(json.dumps(s3_endpoint["sciops_s3"]))
        conn["extra"]["endpoint_url"] = proxy.url
        monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_S3_FLAKY", json.dumps(conn))
        flaky = S3Storage(s3_root.url, "sciops_s3_flaky")
        backend.stage_out(flaky, SimpleNamespace(project="cells", run_id="r1", run_dir=str(run_dir)))
        copy = shared_storage / "copy"
        backend.stage_in(flaky, SimpleNamespace(project="cells", project_root=str(copy)))
    backend.close()

    assert proxy.refused > 0 and set(proxy.seen.values()) == {4}, proxy.seen   # each request: 3 SlowDowns, then in
    remote = s3_root.tree("cells", "output", "r1").list()
    assert {k: e.etag.strip('"') for k, e in remote.items()} == files(run_dir)
    assert files(copy) == files(lan)
