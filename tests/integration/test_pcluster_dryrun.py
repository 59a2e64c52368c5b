"""The real ``pcluster create-cluster --dryrun true`` (its own venv) on our generated configs,
against moto's EC2 and S3 over HTTP: pcluster's full validators run, nothing is created.

Three validators are suppressed because moto cannot answer what they ask (launch-template
dry runs and key-pair lookups by type): HeadNodeLaunchTemplateValidator,
ComputeResourceLaunchTemplateValidator, KeyPairValidator.
"""
from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest
import yaml

from helpers import REPO
from sciops.clusters import parallelcluster as pc

PCLUSTER = REPO / ".venv-pcluster" / "bin" / "pcluster"
SUPPRESS = ("HeadNodeLaunchTemplateValidator", "ComputeResourceLaunchTemplateValidator", "KeyPairValidator")
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_account(s3_endpoint):
    conn = s3_endpoint["sciops_s3"]
    kw = dict(endpoint_url=conn["extra"]["endpoint_url"], region_name=REGION, aws_access_key_id=conn["login"],
              aws_secret_access_key=conn["password"])
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    suffix = uuid.uuid4().hex[:8]  # the endpoint lives as long as the testbed: names must be new each run
    key = f"sciops-lab-key-{suffix}"
    ec2.create_key_pair(KeyName=key)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    bucket = f"sciops-pcluster-dryrun-{suffix}"
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "AWS_ENDPOINT_URL": kw["endpoint_url"],
           "AWS_ACCESS_KEY_ID": conn["login"], "AWS_SECRET_ACCESS_KEY": conn["password"], "AWS_DEFAULT_REGION": REGION}
    return {"subnet": subnet, "ami": image, "bucket": bucket, "env": env, "key": key}


COMBOS = {
    "on-demand": {},
    "spot-with-price": {"spot": True, "spot_max_price": 0.15, "max_count": 20},
    "bigger-nodes": {"compute_instance_type": "m5.2xlarge", "min_count": 1, "max_count": 6,
                     "head_node_instance_type": "m5.large", "shared_storage_gb": 500},
}


@pytest.mark.parametrize("label", list(COMBOS))
def test_generated_config_passes_pclusters_dryrun(moto_account, tmp_path, label):
    assert PCLUSTER.exists(), "no .venv-pcluster: run scripts/pcluster-venv.sh (scripts/test.sh does)"
    settings, problems = pc.settings_from(
        {"region": REGION, "subnet_id": moto_account["subnet"], "key_name": moto_account["key"],
         "custom_ami": moto_account["ami"], **COMBOS[label]},
        bucket=moto_account["bucket"], run_id=f"manual__{label}", project="cells")
    assert problems == [] and pc.check_settings(settings, 2048) == []
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(pc.build_config(settings)))
    cli = pc.PCluster(REGION, str(PCLUSTER), env=moto_account["env"])
    assert cli.dryrun(pc.cluster_name(settings.run_id), str(path), SUPPRESS) == []


def test_dryrun_catches_what_the_schema_cannot(moto_account, tmp_path):
    """A subnet id that is well-formed but does not exist in the account: only the dry run knows."""
    settings, _ = pc.settings_from({"region": REGION, "subnet_id": "subnet-0badbadbadbadbad0",
                                    "key_name": moto_account["key"], "custom_ami": moto_account["ami"]},
                                   bucket=moto_account["bucket"], run_id="manual__bad-subnet", project="cells")
    assert pc.check_settings(settings, 2048) == []
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(pc.build_config(settings)))
    problems = pc.PCluster(REGION, str(PCLUSTER), env=moto_account["env"]).dryrun("sciops-bad", str(path), SUPPRESS)
    assert problems and "subnet" in json.dumps(problems).lower(), problems
