"""ParallelCluster: config, pre-creation checks, and the pcluster command boundary (documented JSON shapes)."""
from __future__ import annotations

import json
import re

import pytest

from sciops.clusters import parallelcluster as pc

BASE = dict(region="eu-west-1", subnet_id="subnet-0123456789abcdef0", key_name="lab-key",
            custom_ami="ami-0123456789abcdef0", bucket="imaging-projects", run_id="manual__2026-11-26T22-50-00",
            project="demo")


def test_cluster_name_is_valid_and_stable():
    name = pc.cluster_name("manual__2026-11-26T22:50:00.123+00:00")
    assert re.match(r"^[A-Za-z][A-Za-z0-9-]{0,59}$", name)
    assert name == pc.cluster_name("manual__2026-11-26T22:50:00.123+00:00")    # a retried create finds it
    assert name != pc.cluster_name("manual__2026-11-26T22:50:00.124+00:00")
    assert len(pc.cluster_name("x" * 300)) <= 60


def test_config_spot_and_tags():
    cfg = pc.build_config(pc.PClusterSettings(**BASE, spot=True, spot_max_price=0.12, min_count=1, max_count=8))
    queue = cfg["Scheduling"]["SlurmQueues"][0]
    assert cfg["Scheduling"]["Scheduler"] == "slurm" and queue["CapacityType"] == "SPOT"
    assert queue["ComputeResources"][0] == {"Name": "c5xlarge", "InstanceType": "c5.xlarge", "MinCount": 1,
                                            "MaxCount": 8, "SpotPrice": 0.12}
    assert {"Key": "sciops:run-id", "Value": BASE["run_id"]} in cfg["Tags"]
    assert {"Key": "sciops:project", "Value": "demo"} in cfg["Tags"]
    assert cfg["HeadNode"]["Iam"]["S3Access"] == [{"BucketName": "imaging-projects", "EnableWriteAccess": True}]
    assert cfg["Image"]["CustomAmi"] == BASE["custom_ami"]


@pytest.mark.parametrize("changes,memory,field", [
    ({"compute_instance_type": "c5.huge"}, 2048, "compute_instance_type"),
    ({"head_node_instance_type": "t9.nano"}, 2048, "head_node_instance_type"),
    ({"compute_instance_type": "c5.large"}, 4096, "memory"),          # 4 GiB node, 4 GB task + node reserve
    ({"min_count": 5, "max_count": 2}, 2048, "max_count"),
    ({"spot": True, "spot_max_price": 0}, 2048, "spot_max_price"),
    ({"spot_max_price": 0.2}, 2048, "spot_max_price"),                # price without spot
    ({"subnet_id": "subnet-xyz"}, 2048, "subnet_id"),
    ({"custom_ami": "ami-123"}, 2048, "custom_ami"),
    ({"bucket": "Bad_Bucket"}, 2048, "bucket"),
    ({"region": "europe"}, 2048, "region"),
])
def test_bad_combinations_name_the_field(changes, memory, field):
    problems = pc.check_settings(pc.PClusterSettings(**{**BASE, **changes}), task_memory_mb=memory)
    assert field in [f for f, _ in problems], problems


def test_good_settings_have_no_problems():
    assert pc.check_settings(pc.PClusterSettings(**BASE), task_memory_mb=3072) == []


# Shapes as pcluster 3 documents them (DescribeClusterResponseContent, ListClustersResponseContent).
DESCRIBE_READY = {"clusterName": "sciops-x", "clusterStatus": "CREATE_COMPLETE",
                  "cloudformationStackStatus": "CREATE_COMPLETE", "region": "eu-west-1", "version": "3.16.1",
                  "headNode": {"instanceId": "i-0abc", "instanceType": "t3.medium", "state": "running",
                               "privateIpAddress": "10.0.0.5", "publicIpAddress": "54.1.2.3"},
                  "tags": [{"key": "sciops:run-id", "value": "r1"}, {"key": "sciops:project", "value": "demo"}]}


@pytest.mark.parametrize("rc,payload,state", [
    (0, DESCRIBE_READY, pc.READY),
    (0, {**DESCRIBE_READY, "clusterStatus": "CREATE_IN_PROGRESS", "headNode": None}, pc.CREATING),
    (0, {**DESCRIBE_READY, "clusterStatus": "CREATE_FAILED"}, pc.FAILED),
    (0, {**DESCRIBE_READY, "clusterStatus": "DELETE_IN_PROGRESS"}, pc.DELETING),
    (0, {**DESCRIBE_READY, "clusterStatus": "DELETE_FAILED"}, pc.FAILED),
    (1, {"message": "Cluster 'sciops-x' does not exist or belongs to an incompatible ParallelCluster major "
                    "version."}, pc.GONE),
    (1, {"message": "Unable to connect to the endpoint"}, None),      # unknown: ask again, never "gone"
])
def test_describe_states(rc, payload, state):
    got = pc.parse_describe(rc, json.dumps(payload))
    assert got["state"] == state
    if state == pc.READY:
        assert got["head_node_ip"] == "54.1.2.3" and got["tags"]["sciops:run-id"] == "r1"


def test_list_clusters():
    out = json.dumps({"clusters": [{"clusterName": "sciops-a", "clusterStatus": "CREATE_COMPLETE",
                                    "region": "eu-west-1", "version": "3.16.1"}]})
    assert pc.parse_list(out) == [{"name": "sciops-a", "status": "CREATE_COMPLETE"}]


def test_argv_is_a_list_with_the_region():
    assert pc.describe_argv("/opt/pc/bin/pcluster", "sciops-a", "eu-west-1") == [
        "/opt/pc/bin/pcluster", "describe-cluster", "--cluster-name", "sciops-a", "--region", "eu-west-1"]


def test_host_keys_from_a_cloud_init_console():
    from helpers import REPO

    text = (REPO / "tests/fixtures/pcluster/console_output.txt").read_text().replace("{KEY}", "AAAAC3NzaC1lZDI1NTE5AAAAIOne")
    keys = pc.host_keys_from_console(text)
    assert keys[0] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne"          # the strongest type first
    assert [k.split()[0] for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    # fingerprints are not keys; a console without the block has none
    assert pc.host_keys_from_console(text.split("-----BEGIN SSH HOST KEY KEYS")[0]) == []
    # after a reboot cloud-init prints the block again: the last one wins
    rebooted = text + text.replace("AAAAC3NzaC1lZDI1NTE5AAAAIOne", "AAAAC3NzaC1lZDI1NTE5AAAAITwo")
    assert pc.host_keys_from_console(rebooted)[0] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo"


def test_describe_gives_the_head_node_instance():
    out = pc.parse_describe(0, json.dumps(DESCRIBE_READY))
    assert out["head_node_instance_id"] == DESCRIBE_READY["headNode"]["instanceId"]


def test_pcluster_defaults_to_this_checkouts_own_virtualenv(monkeypatch):
    from helpers import REPO

    monkeypatch.delenv("SCIOPS_PCLUSTER", raising=False)
    assert pc.default_pcluster() == str(REPO / ".venv-pcluster" / "bin" / "pcluster")
    monkeypatch.setenv("SCIOPS_PCLUSTER", "/opt/pc/bin/pcluster")
    assert pc.default_pcluster() == "/opt/pc/bin/pcluster"


def test_every_name_the_package_offers_is_there():
    """pc.X for what the modules beside the backend define (loaded when first asked)."""
    for name in pc.__all__:
        assert getattr(pc, name) is not None, name
    with pytest.raises(AttributeError):
        pc.not_a_name  # noqa: B018
