"""A run's ``cluster`` settings: checked before anything is created, and the ParallelCluster 3 config they make.

The cluster's name comes from the run id (a retried create finds the same cluster).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import MISSING as dataclass_missing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sciops.clusters.parallelcluster.shapes import INSTANCE_TYPES, NODE_RESERVED_MB, fits

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

SUBNET = re.compile(r"^subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
AMI = re.compile(r"^ami-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
KEY_NAME = re.compile(r"^[\w.@+=,-]{1,255}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-\d$")
TAG_VALUE = re.compile(r"^[\w .:/=+@-]{1,256}$")


def cluster_name(run_id: str) -> str:
    """A valid ParallelCluster name (letter first, [A-Za-z0-9-], at most 60), stable per run id."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", run_id).strip("-")[:40].strip("-")
    return f"sciops-{stem}-{digest}"


@dataclass(frozen=True)
class PClusterSettings:
    """What a run asks of an ephemeral cluster."""

    region: str
    subnet_id: str
    key_name: str
    custom_ami: str
    bucket: str
    run_id: str
    project: str
    head_node_instance_type: str = "t3.medium"
    compute_instance_type: str = "c5.xlarge"
    min_count: int = 0
    max_count: int = 4
    spot: bool = False
    spot_max_price: float | None = None
    shared_storage_gb: int = 100
    root_volume_gb: int = 60
    os: str = "alinux2023"
    tags: dict[str, str] = field(default_factory=dict)


REQUIRED = ("region", "subnet_id", "key_name", "custom_ami")


def with_defaults(cluster: dict[str, Any] | None) -> dict[str, Any]:
    """A run's ``cluster`` parameter with PClusterSettings' defaults filled in (the one place they live)."""
    from sciops.run.config import ClusterSettings

    defaults = {f.name: f.default for f in fields(PClusterSettings) if f.name in ClusterSettings.model_fields
                and f.default is not dataclass_missing}
    return {**defaults, **{k: v for k, v in (cluster or {}).items() if v is not None}}


def settings_from(cluster, *, bucket: str, run_id: str, project: str,
                  dag_id: str = "fiji_project") -> tuple[PClusterSettings | None, list[tuple[str, str]]]:
    """The run's ``cluster`` parameter → settings, or the problems (field names ``cluster.<key>``).

    ``cluster``: a :class:`sciops.run.config.ClusterSettings` (keys and types checked once, there), or
    a dict that is checked by it here; what this backend requires on top is checked here.
    """
    from sciops.run.config import ClusterSettings, cluster_problems

    if not isinstance(cluster, ClusterSettings):
        cluster, problems = cluster_problems(cluster)
        if problems:
            return None, problems
    given = cluster.given()
    problems = [(f"cluster.{k}", "is required for the parallelcluster backend") for k in REQUIRED if not given.get(k)]
    if problems:
        return None, problems
    return PClusterSettings(bucket=bucket, run_id=run_id, project=project, tags={"sciops:dag-id": dag_id},
                            **given), []


def check_settings(s: PClusterSettings, task_memory_mb: int, task_cpus: int = 1) -> list[tuple[str, str]]:
    """Every problem with ``s`` as ``(field, what to do)``: checked before anything is created."""
    problems: list[tuple[str, str]] = []
    for fld, value in (("head_node_instance_type", s.head_node_instance_type),
                       ("compute_instance_type", s.compute_instance_type)):
        if value not in INSTANCE_TYPES:
            problems.append((fld, f"unknown instance type {value!r}; known: {', '.join(sorted(INSTANCE_TYPES))}"))
    if s.compute_instance_type in INSTANCE_TYPES:
        cpus, gib = INSTANCE_TYPES[s.compute_instance_type]
        if not fits(s.compute_instance_type, task_memory_mb):
            problems.append(("memory", f"{task_memory_mb} MB per task (the JVM's -Xmx plus overhead) does not fit a "
                                       f"{s.compute_instance_type} ({gib:g} GiB, {NODE_RESERVED_MB} MB kept for the "
                                       "node): lower memory or choose a larger compute_instance_type"))
        if task_cpus > cpus:
            problems.append(("compute_instance_type", f"{s.compute_instance_type} has {cpus} vCPUs, a task asks "
                                                      f"{task_cpus}"))
    if s.min_count < 0:
        problems.append(("min_count", f"must be 0 or more (got {s.min_count})"))
    if s.max_count < 1 or s.max_count < s.min_count:
        problems.append(("max_count", f"must be at least 1 and at least min_count={s.min_count} "
                                      f"(got {s.max_count})"))
    if s.spot and s.spot_max_price is not None and s.spot_max_price <= 0:
        problems.append(("spot_max_price", f"must be a positive price in USD per hour (got {s.spot_max_price})"))
    if not s.spot and s.spot_max_price is not None:
        problems.append(("spot_max_price", "is only for spot capacity: set spot=true or remove it"))
    for fld, pattern, value, example in (("subnet_id", SUBNET, s.subnet_id, "subnet-0123456789abcdef0"),
                                         ("custom_ami", AMI, s.custom_ami, "ami-0123456789abcdef0"),
                                         ("key_name", KEY_NAME, s.key_name, "lab-key"),
                                         ("bucket", BUCKET, s.bucket, "imaging-projects"),
                                         ("region", REGION, s.region, "eu-west-1")):
        if not pattern.match(value or ""):
            problems.append((fld, f"{value!r} is not well-formed; it looks like {example!r}"))
    if s.shared_storage_gb < 1 or s.root_volume_gb < 35:
        problems.append(("shared_storage_gb" if s.shared_storage_gb < 1 else "root_volume_gb",
                         "shared storage needs at least 1 GB and the root volume at least 35 GB"))
    if not TAG_VALUE.match(s.run_id) or not TAG_VALUE.match(s.project):
        problems.append(("run_id", "run id and project must be valid AWS tag values"))
    return problems


def build_config(s: PClusterSettings) -> dict[str, Any]:
    """The ParallelCluster 3 cluster configuration (as a dict; ``yaml.safe_dump`` it)."""
    s3 = [{"BucketName": s.bucket, "EnableWriteAccess": True}]
    resource: dict[str, Any] = {"Name": re.sub(r"[^a-z0-9]", "", s.compute_instance_type.lower())[:25],
                                "InstanceType": s.compute_instance_type, "MinCount": s.min_count,
                                "MaxCount": s.max_count}
    if s.spot and s.spot_max_price is not None:
        resource["SpotPrice"] = s.spot_max_price
    tags = {"sciops:run-id": s.run_id, "sciops:project": s.project, **s.tags}
    return {
        "Region": s.region,
        "Image": {"Os": s.os, "CustomAmi": s.custom_ami},
        "HeadNode": {
            "InstanceType": s.head_node_instance_type,
            "Networking": {"SubnetId": s.subnet_id},
            "Ssh": {"KeyName": s.key_name},
            "LocalStorage": {"RootVolume": {"Size": s.root_volume_gb}},
            "Iam": {"S3Access": s3},
        },
        "Scheduling": {
            "Scheduler": "slurm",
            "SlurmQueues": [{
                "Name": "fiji",
                "CapacityType": "SPOT" if s.spot else "ONDEMAND",
                "ComputeResources": [resource],
                "Networking": {"SubnetIds": [s.subnet_id]},
                "Iam": {"S3Access": s3},
            }],
        },
        "SharedStorage": [{"MountDir": "/shared", "Name": "shared", "StorageType": "Ebs",
                           "EbsSettings": {"Size": s.shared_storage_gb}}],
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def write_cluster_config(run_dir: Path | str, settings: PClusterSettings) -> Path:
    """``work/cluster.yaml``: the ParallelCluster config the dry run checks and create_cluster uses."""
    import yaml

    path = Path(run_dir, "work", "cluster.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build_config(settings), sort_keys=False))
    return path
