"""Cost arithmetic against hand-computed cases (prices from the shipped table, us-east-1)."""
from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest

from sciops.accounting import costs

PRICES = costs.load_prices()
T0 = 1_800_000_000.0


def test_on_demand_whole_and_partial_hours_and_the_minute_minimum():
    iv = [costs.Interval("c5.xlarge", T0, T0 + 7200)]                     # 2 h × $0.17
    assert costs.instance_costs(iv, "us-east-1", PRICES)["c5.xlarge (on-demand)"]["usd"] == pytest.approx(0.34)
    half = costs.instance_costs([costs.Interval("c5.xlarge", T0, T0 + 1800)], "us-east-1", PRICES)
    assert half["c5.xlarge (on-demand)"]["usd"] == pytest.approx(0.085)   # per second: half an hour
    short = costs.instance_costs([costs.Interval("c5.xlarge", T0, T0 + 30)], "us-east-1", PRICES)
    assert short["c5.xlarge (on-demand)"]["node_hours"] == pytest.approx(60 / 3600)  # billed 60 s
    assert short["c5.xlarge (on-demand)"]["usd"] == pytest.approx(0.17 / 60)


def test_mixed_instance_types():
    ivs = [costs.Interval("t3.medium", T0, T0 + 3600)] + [costs.Interval("c5.xlarge", T0, T0 + 1800)] * 3
    out = costs.instance_costs(ivs, "us-east-1", PRICES)
    assert out["t3.medium (on-demand)"]["usd"] == pytest.approx(0.0416)
    assert out["c5.xlarge (on-demand)"] == pytest.approx({"instances": 3, "node_hours": 1.5, "usd": 0.255})
    assert sum(r["usd"] for r in out.values()) == pytest.approx(0.2966)


def test_spot_is_time_weighted_over_the_instance_life():
    history = [(T0, 0.05), (T0 + 1800, 0.07)]
    assert costs.spot_price_over(history, T0, T0 + 3600) == pytest.approx(0.06)
    # the price in force at the start is the last one before it
    assert costs.spot_price_over([(T0 - 600, 0.04), (T0 + 900, 0.06)], T0, T0 + 1800) == pytest.approx(0.05)
    out = costs.instance_costs([costs.Interval("c5.xlarge", T0, T0 + 3600, spot=True)], "us-east-1", PRICES,
                               {"c5.xlarge": history})
    assert out["c5.xlarge (spot)"]["usd"] == pytest.approx(0.06)


def test_storage_and_hourly_rate(tmp_path):
    assert costs.ebs_cost(100, 730, "us-east-1", PRICES) == pytest.approx(8.0)
    assert costs.ebs_cost(100, 1, "us-east-1", PRICES) == pytest.approx(8.0 / 730)
    status = tmp_path / "status"
    status.mkdir()
    for task, host, secs in ((1, "node-a", 1800), (2, "node-b", 3600)):
        (status / f"task-{task:04d}.attempt-1.json").write_text(json.dumps(
            {"task": task, "attempt": 1, "host": host, "start": T0, "end": T0 + secs, "exit": 0}))
    out = costs.rate_cost(tmp_path, hourly_rate_usd=2.0)
    assert out["total_usd"] == pytest.approx(3.0)
    assert out["node_hours"] == {"task-hours on node-a": 0.5, "task-hours on node-b": 1.0}


def test_price_table_is_dated_with_its_source():
    assert PRICES["as_of"] and PRICES["source"] and PRICES["on_demand_usd_per_hour"]["eu-west-1"]["c5.xlarge"]
    with pytest.raises(KeyError, match="sciops_prices"):
        costs.on_demand_price(PRICES, "us-east-1", "x9.huge")


def test_cluster_instances_from_ec2(s3_endpoint):
    """Node-hours of a cluster's instances from EC2 (moto over HTTP): launch → terminate."""
    conn = s3_endpoint["sciops_s3"]
    ec2 = boto3.client("ec2", endpoint_url=conn["extra"]["endpoint_url"], region_name="us-east-1",
                       aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name = f"sciops-cost-{int(T0)}-{id(ec2) % 10000}"
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "parallelcluster:cluster-name", "Value": name}]}]
    head = ec2.run_instances(ImageId=image, InstanceType="t3.medium", MinCount=1, MaxCount=1,
                             TagSpecifications=tags)["Instances"][0]
    nodes = ec2.run_instances(ImageId=image, InstanceType="c5.xlarge", MinCount=2, MaxCount=2,
                              TagSpecifications=tags)["Instances"]
    ec2.terminate_instances(InstanceIds=[n["InstanceId"] for n in nodes])
    now = dt.datetime.now(dt.timezone.utc).timestamp() + 3600  # an hour later: the head node still runs
    ivs = {iv.instance_id: iv for iv in costs.ec2_intervals(ec2, name, now=now)}
    assert set(ivs) == {head["InstanceId"], *(n["InstanceId"] for n in nodes)}
    assert ivs[head["InstanceId"]].end == now
    assert all(ivs[n["InstanceId"]].end < now - 3000 for n in nodes)  # ended at their termination
    out = costs.pcluster_cost(ec2, name, "us-east-1", PRICES, volume_gb=100, now=now)
    assert out["node_hours"]["t3.medium (on-demand)"] == pytest.approx(1.0, abs=0.01)
    assert out["total_usd"] == pytest.approx(out["compute_usd"] + out["storage_usd"])
