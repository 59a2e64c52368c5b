"""fiji_project with backend parallelcluster, end to end on this machine.

What is real: Slurm (the testbed) behind sshd on 127.0.0.1 as the "head node", S3 (moto over
HTTP), the head node's AWS CLI, ImageJ. What stands in: the ``pcluster`` CLI itself
(tests/fixtures/pcluster/fake_pcluster.py answers in pcluster's documented JSON and says the
head node is 127.0.0.1). The cluster's shared folder (``cluster_storage_root``) is not the
worker's work root: everything crosses through the bucket, as with a real cluster in AWS.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import fresh_dag, task_states, wrapping_macro

pytestmark = pytest.mark.imagej

COUNTS = {"n05.tif": 5, "n12.tif": 12, "n17.tif": 17}
CLUSTER = {"region": "us-east-1", "subnet_id": "subnet-0123456789abcdef0", "key_name": "lab-key",
           "custom_ami": "ami-0123456789abcdef0", "compute_instance_type": "c5.xlarge", "max_count": 2}
CRASH = wrapping_macro('exec("sh", "-c", "kill -9 $(ps -o ppid= $PPID) $PPID");')


@pytest.fixture
def pcluster_run(airflow_db, slurm, shared_storage, s3_root, fake_pcluster, pcluster_head, tmp_path):
    """A project in the bucket; returns (conf, the cluster's shared folder, storage, fake pcluster)."""
    from sciops.imaging.synthetic import make_images
    from sciops.storage.sync import sync_up

    lan = tmp_path / "lan" / "cells"
    (lan / "input").mkdir(parents=True)
    (lan / "src").mkdir()
    (lan / "src" / "crash.ijm").write_text(CRASH)
    make_images(lan / "input", COUNTS, size=256)
    sync_up(s3_root, lan, "cells")
    conf = {"project": "cells", "backend": "parallelcluster", "ssh_conn_id": pcluster_head[0],
            "cluster_storage_root": str(shared_storage), "memory": "1G", "stall_seconds": 10, "images_per_task": 2,
            "storage_root": s3_root.url, "aws_conn_id": "sciops_s3", "cluster": dict(CLUSTER)}
    return conf, shared_storage, s3_root, fake_pcluster, pcluster_head[1]


def commands(fake) -> list[str]:
    return [c["argv"][0] + (" --dryrun" if "--dryrun" in c["argv"] else "") for c in fake.state().get("calls", [])]


def test_ephemeral_cluster_end_to_end(pcluster_run):
    conf, shared, storage, fake, host_key = pcluster_run
    dr = fresh_dag().test(run_conf=conf)
    states = task_states(dr)
    assert dr.state == "success", states
    assert states["create_cluster"] == states["delete_cluster"] == "success"
    calls = commands(fake)
    assert calls[0] == "create-cluster --dryrun"          # validate: pcluster's validators, nothing made
    assert calls.count("create-cluster") == 1 and calls.count("delete-cluster") == 1
    assert fake.state()["clusters"] == {}                 # deleted and waited on until gone
    assert all(c["has_credentials"] for c in fake.state()["calls"])  # from the AWS connection, in the env
    # results crossed back through the bucket
    remote = storage.tree("cells").list()
    [run_id] = {k.split("/")[1] for k in remote if k.startswith("output/")}
    for name in ("results.csv", "summary.csv", "run.json", "work/cluster.yaml"):
        assert f"output/{run_id}/{name}" in remote, name
    summary = pd.read_csv(__import__("io").BytesIO(storage.read_bytes("cells", "output", run_id, "summary.csv")))
    assert summary.set_index("image")["count"].astype(int).to_dict() == COUNTS
    run = json.loads(storage.read_bytes("cells", "output", run_id, "run.json"))
    assert {"cluster_create", "teardown"} <= set(run["phases"]) and run["status"] == "success"
    # the cluster's own copy: staged in by the head node, written by its tasks
    assert (shared / "cells" / "input" / "n05.tif").owner() == "sciops"
    assert list((shared / "cells" / "output" / run_id / "work" / "images").iterdir())
    # every SSH command went to the head node whose key its console output gave (the connection pins none)
    manifest = json.loads((shared / "cells" / "output" / run_id / "work" / "manifest.json").read_text())
    assert manifest["backend_options"]["host_key"] == host_key


def test_teardown_runs_when_the_array_fails(pcluster_run):
    conf, shared, storage, fake, _ = pcluster_run
    dr = fresh_dag().test(run_conf={**conf, "macro": "src/crash.ijm", "max_attempts": 1, "smoke_test": False})
    states = task_states(dr)
    assert dr.state == "failed"
    assert states["run_array"] == "failed" and states["delete_cluster"] == "success", states
    assert fake.state()["clusters"] == {}


def test_failed_teardown_fails_the_run(pcluster_run, slack_receiver):
    conf, shared, storage, fake, _ = pcluster_run
    fake.set(delete_outcome="DELETE_FAILED")
    dr = fresh_dag().test(run_conf=conf)
    states = task_states(dr)
    assert states["run_array"] == "success" and states["delete_cluster"] == "failed", states
    assert dr.state == "failed"
    [cluster] = fake.state()["clusters"].values()
    assert cluster["status"] == "DELETE_FAILED"
    alerts = [p["json"]["text"] for p in slack_receiver if "teardown FAILED" in p["json"]["text"]]
    assert alerts and cluster["name"] in alerts[0] and "pcluster delete-cluster" in alerts[0]


@pytest.mark.parametrize("change,field", [
    ({"cluster": {**CLUSTER, "subnet_id": "subnet-XYZ"}}, "cluster.subnet_id"),
    ({"cluster": {**CLUSTER, "max_count": 0}}, "cluster.max_count"),
    ({"cluster": {**CLUSTER, "compute_instance_type": "c5.large"}, "memory": "4G"}, "memory"),
    ({"cluster": {**CLUSTER, "spot": True, "spot_max_price": -1}}, "cluster.spot_max_price"),
    ({"cluster": {k: v for k, v in CLUSTER.items() if k != "custom_ami"}}, "cluster.custom_ami"),
    ({"ssh_conn_id": "sciops_cluster"}, "ssh_conn_id"),   # pins a host key: a new cluster has a new one
])
def test_bad_cluster_settings_fail_in_validate_before_anything_is_made(pcluster_run, change, field):
    from sciops.errors import ConfigError
    from sciops.phases.checks import validate

    conf, shared, storage, fake, _ = pcluster_run
    with pytest.raises(ConfigError) as err:
        validate({**conf, **change}, "manual__bad")
    assert field in err.value.fields, err.value
    assert "create-cluster" not in commands(fake)
