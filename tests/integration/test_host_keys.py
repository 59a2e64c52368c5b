"""A new head node's host key: read from EC2's console output, pinned, and nothing else accepted.

Real sshd (the testbed, standing in for a new head node), real paramiko and asyncssh
through the SSH provider's hooks, real EC2 API calls to moto over HTTP.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import boto3
import pytest

from sciops.clusters import parallelcluster as pc
from sciops.errors import ClusterError, CommandError
from sciops.arrays.ssh import AsyncCommandRunner, SSHRunner


def other_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    return " ".join((tmp_path / "k.pub").read_text().split()[:2])


def test_the_pinned_key_is_the_only_one_accepted(pcluster_head, tmp_path):
    conn_id, real_key = pcluster_head
    marker = Path("/tmp") / f"sciops-pin-{uuid.uuid4().hex[:8]}"
    good = SSHRunner(conn_id, host="127.0.0.1", host_key=real_key)
    try:
        assert good.run(["echo", "pinned"]).stdout.strip() == "pinned"
    finally:
        good.close()
    # the head node answers with another key (a man in the middle, a reused IP): refused before anything is sent
    bad = SSHRunner(conn_id, host="127.0.0.1", host_key=other_key(tmp_path))
    with pytest.raises(Exception) as err:
        bad.run(["sh", "-c", f"touch {marker}"])
    assert "key" in str(err.value).lower() or isinstance(err.value, CommandError), err.value
    assert not marker.exists()
    bad.close()


def test_the_trigger_runner_pins_it_too(pcluster_head, tmp_path):
    conn_id, real_key = pcluster_head

    async def run(key):
        runner = AsyncCommandRunner(conn_id, host="127.0.0.1", host_key=key)
        try:
            return (await runner.run(["echo", "pinned"])).stdout.strip()
        finally:
            await runner.close()

    assert asyncio.run(run(real_key)) == "pinned"
    with pytest.raises(Exception) as err:
        asyncio.run(run(other_key(tmp_path)))
    assert "host key" in str(err.value).lower() or "not trusted" in str(err.value).lower(), err.value


def test_without_the_connection_pinning_anything_an_unpinned_runner_is_refused(pcluster_head, tmp_path,
                                                                                 monkeypatch):
    """The head connection has no host_key: without SciOps' pin, paramiko refuses an unknown host."""
    conn_id, _ = pcluster_head
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.ssh/known_hosts that could know the testbed
    runner = SSHRunner(conn_id, host="127.0.0.1")
    with pytest.raises(Exception) as err:
        runner.run(["true"])
    assert "known_hosts" in str(err.value) or "not found" in str(err.value).lower(), err.value
    runner.close()


def test_console_output_through_the_ec2_api(s3_endpoint, monkeypatch):
    """The real call to EC2 (moto over HTTP): its console has no cloud-init block, so no key and a clear error."""
    conn = s3_endpoint["sciops_s3"]
    ec2 = boto3.client("ec2", endpoint_url=conn["extra"]["endpoint_url"], region_name="us-east-1",
                       aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    text = pc.console_output(instance, "us-east-1", "sciops_s3")
    assert "Linux version" in text                    # decoded from base64 by botocore
    with pytest.raises(ClusterError) as err:
        pc.head_node_host_key(instance, "us-east-1", "sciops_s3", wait_s=0)
    assert "printed no SSH host keys" in str(err.value) and instance in str(err.value)
    with pytest.raises(ClusterError, match="cannot read the console output"):
        pc.console_output("i-00000000000000000", "us-east-1", "sciops_s3")


def test_a_head_connection_that_pins_or_skips_is_refused(pcluster_head, monkeypatch):
    conn_id, key = pcluster_head
    assert pc.head_connection_problems(conn_id) == []
    conn = json.loads(__import__("os").environ["AIRFLOW_CONN_SCIOPS_PCLUSTER_HEAD"])
    for extra in ({"host_key": key}, {"no_host_key_check": "true"}, {"allow_host_key_change": True}):
        monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_PCLUSTER_HEAD", json.dumps({**conn, "extra": {**conn["extra"], **extra}}))
        problems = pc.head_connection_problems(conn_id)
        assert problems and list(extra)[0] in problems[0] and "console output" in problems[0]
    assert "no Airflow connection" in pc.head_connection_problems("sciops_nowhere")[0]
