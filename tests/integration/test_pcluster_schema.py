"""Generated cluster configs pass ParallelCluster's own schema (pcluster 3.16.1, in its own venv)."""
from __future__ import annotations

import json
import subprocess

import yaml

from helpers import REPO
from sciops.clusters import parallelcluster as pc

PCLUSTER_PY = REPO / ".venv-pcluster" / "bin" / "python"
VALIDATE = """
import json, sys, yaml
from pcluster.schemas.cluster_schema import ClusterSchema
out = []
for name, text in json.load(sys.stdin):
    try:
        ClusterSchema(cluster_name=name).load(yaml.safe_load(text))
        out.append([name, "ok"])
    except Exception as exc:
        out.append([name, f"{type(exc).__name__}: {exc}"])
print(json.dumps(out))
"""

BASE = dict(region="eu-west-1", subnet_id="subnet-0123456789abcdef0", key_name="lab-key",
            custom_ami="ami-0123456789abcdef0", bucket="imaging-projects", project="demo")

COMBOS = {
    "on-demand": {},
    "spot-with-price": {"spot": True, "spot_max_price": 0.15, "max_count": 20},
    "spot-no-price": {"spot": True, "compute_instance_type": "m5.2xlarge"},
    "warm-pool": {"min_count": 2, "max_count": 6, "head_node_instance_type": "m5.large", "shared_storage_gb": 500,
                  "root_volume_gb": 100},
}


def test_generated_configs_pass_pclusters_schema():
    assert PCLUSTER_PY.exists(), "no .venv-pcluster: run scripts/pcluster-venv.sh (scripts/test.sh does)"
    docs = []
    for label, changes in COMBOS.items():
        settings = pc.PClusterSettings(**BASE, run_id=f"manual__{label}", **changes)
        assert pc.check_settings(settings, task_memory_mb=2048) == []
        docs.append([pc.cluster_name(settings.run_id), yaml.safe_dump(pc.build_config(settings))])
    proc = subprocess.run([str(PCLUSTER_PY), "-c", VALIDATE], input=json.dumps(docs), capture_output=True, text=True,
                          env={"AWS_DEFAULT_REGION": "eu-west-1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert all(v == "ok" for v in results.values()), results


def test_the_schema_does_reject_a_broken_config():
    """The check above would pass vacuously if the schema accepted anything."""
    settings = pc.PClusterSettings(**BASE, run_id="manual__broken")
    cfg = pc.build_config(settings)
    cfg["Scheduling"]["SlurmQueues"][0]["ComputeResources"][0]["MaxCount"] = "many"
    proc = subprocess.run([str(PCLUSTER_PY), "-c", VALIDATE], input=json.dumps([["sciops-broken", yaml.safe_dump(cfg)]]),
                          capture_output=True, text=True, env={"AWS_DEFAULT_REGION": "eu-west-1", "PATH": "/usr/bin:/bin"},
                          timeout=300)
    assert json.loads(proc.stdout.strip().splitlines()[-1])[0][1] != "ok"
