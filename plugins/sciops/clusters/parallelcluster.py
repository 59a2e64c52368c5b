"""The ``parallelcluster`` backend: AWS ParallelCluster 3 (Slurm), made for one run.

:class:`PClusterBackend` (at the end) is the backend; the rest is what it stands on. The config YAML from a run's settings, the checks that must pass before anything is
created, the cluster name derived from the run id (a retried create finds the same
cluster), and the ``pcluster`` command boundary: argv builders, the parsing of its JSON
answers, and :class:`PCluster`, which runs them (blocking, for the operators; awaited,
for the trigger). The operators are in ``sciops.operators.cluster``, the trigger in
``sciops.triggers.cluster``, the sweeper in ``dags/cluster_sweeper.py``.

``pcluster`` runs from its own virtualenv (``aws-parallelcluster`` pins versions that
conflict with Airflow's): its path is a setting (``SCIOPS_PCLUSTER``, default
``.venv-pcluster/bin/pcluster`` of this checkout), never imported here. Its AWS
credentials come from the run's Airflow AWS connection, handed over in the environment
of the subprocess (never on its command line).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from dataclasses import MISSING as dataclass_missing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sciops.clusters.existing import ExistingBackend
from sciops.errors import ClusterError
from sciops.settings import setting

log = logging.getLogger(__name__)

#: Instance types SciOps knows: vCPUs and memory (GiB), from the EC2 instance type pages.
INSTANCE_TYPES: dict[str, tuple[int, float]] = {
    "t3.medium": (2, 4), "t3.large": (2, 8), "t3.xlarge": (4, 16),
    "m5.large": (2, 8), "m5.xlarge": (4, 16), "m5.2xlarge": (8, 32), "m5.4xlarge": (16, 64),
    "c5.large": (2, 4), "c5.xlarge": (4, 8), "c5.2xlarge": (8, 16), "c5.4xlarge": (16, 32),
    "c6i.xlarge": (4, 8), "c6i.2xlarge": (8, 16), "r5.large": (2, 16), "r5.xlarge": (4, 32),
    "r5.2xlarge": (8, 64),
}
#: Memory the OS, Slurm and Xvfb keep on a compute node, beyond the tasks' grants.
NODE_RESERVED_MB = 1024
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
        if task_memory_mb + NODE_RESERVED_MB > gib * 1024:
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


# -- the pcluster command boundary -----------------------------------------------------------
#: describe-cluster ``clusterStatus`` → what to do next.
CREATING, READY, FAILED, DELETING, GONE = "creating", "ready", "failed", "deleting", "gone"
CLUSTER_STATES = {
    "CREATE_IN_PROGRESS": CREATING, "UPDATE_IN_PROGRESS": CREATING,
    "CREATE_COMPLETE": READY, "UPDATE_COMPLETE": READY,
    "CREATE_FAILED": FAILED, "UPDATE_FAILED": FAILED, "DELETE_FAILED": FAILED,
    "DELETE_IN_PROGRESS": DELETING, "DELETE_COMPLETE": GONE,
}


def create_argv(pcluster: str, name: str, config_path: str, region: str) -> list[str]:
    return [pcluster, "create-cluster", "--cluster-name", name, "--cluster-configuration", config_path,
            "--region", region]


def describe_argv(pcluster: str, name: str, region: str) -> list[str]:
    return [pcluster, "describe-cluster", "--cluster-name", name, "--region", region]


def delete_argv(pcluster: str, name: str, region: str) -> list[str]:
    return [pcluster, "delete-cluster", "--cluster-name", name, "--region", region]


def list_argv(pcluster: str, region: str) -> list[str]:
    return [pcluster, "list-clusters", "--region", region]


def parse_describe(returncode: int, stdout: str) -> dict[str, Any]:
    """``pcluster describe-cluster`` → ``{"state", "status", "head_node_ip", "tags", "message"}``.

    A cluster that does not exist (never made, or deleted) is ``gone``: pcluster answers
    with a non-zero exit and a JSON ``message`` saying it does not exist.
    """
    try:
        data = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        data = {"message": stdout.strip()[:500]}
    message = data.get("message", "")
    none = {"status": None, "head_node_ip": None, "head_node_instance_id": None, "tags": {}}
    if returncode != 0:
        if "does not exist" in message or "not found" in message.lower():
            return {**none, "state": GONE, "message": message}
        return {**none, "state": None, "message": message or stdout[:500]}
    status = data.get("clusterStatus")
    head = data.get("headNode") or {}
    return {"state": CLUSTER_STATES.get(status, None), "status": status,
            "head_node_ip": head.get("publicIpAddress") or head.get("privateIpAddress"),
            "head_node_instance_id": head.get("instanceId"),
            "tags": {t["key"]: t["value"] for t in data.get("tags", [])}, "message": message}


def parse_list(stdout: str) -> list[dict[str, Any]]:
    """``pcluster list-clusters`` → ``[{"name", "status"}]``."""
    data = json.loads(stdout) if stdout.strip() else {}
    return [{"name": c["clusterName"], "status": c.get("clusterStatus")} for c in data.get("clusters", [])]


def dryrun_argv(pcluster: str, name: str, config_path: str, region: str,
                suppress: tuple[str, ...] = ()) -> list[str]:
    """``create-cluster --dryrun true``: every pcluster validator, nothing created."""
    argv = create_argv(pcluster, name, config_path, region) + ["--dryrun", "true"]
    if suppress:
        argv += ["--suppress-validators", *[f"type:{v}" for v in suppress]]
    return argv


DRYRUN_OK = "Request would have succeeded"


def parse_dryrun(returncode: int, stdout: str) -> list[str]:
    """The problems pcluster's validators found ([] = the request would have succeeded).

    pcluster exits 1 even when the dry run passes; the message says which.
    """
    if DRYRUN_OK in stdout:
        return []
    try:
        data = json.loads(stdout)
    except ValueError:
        return [stdout.strip()[-1000:] or f"pcluster exited {returncode} with no output"]
    out = [f"{m.get('level', '')} {m.get('type', '')}: {m.get('message', '')}".strip()
           for m in data.get("configurationValidationErrors", []) + data.get("validationMessages", [])
           if m.get("level") in (None, "ERROR")]
    return out or [data.get("message") or json.dumps(data)[:1000]]


def default_pcluster() -> str:
    return setting("SCIOPS_PCLUSTER")


class PCluster:
    """The ``pcluster`` CLI for one region, with credentials in its environment.

    :param env: extra environment (AWS credentials, ``AWS_ENDPOINT_URL`` for tests); never logged.
    """

    def __init__(self, region: str, pcluster: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 600):
        self.region, self.pcluster, self.timeout = region, pcluster or default_pcluster(), timeout
        self.env = {**os.environ, "AWS_DEFAULT_REGION": region, **(env or {})}

    def _run(self, argv: list[str]) -> tuple[int, str]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=self.timeout)
        except FileNotFoundError:
            raise ClusterError(f"pcluster not found at {argv[0]}: run scripts/pcluster-venv.sh or set "
                               "SCIOPS_PCLUSTER") from None
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{' '.join(argv[:2])} took over {self.timeout:.0f} s") from None
        return proc.returncode, proc.stdout or proc.stderr

    def describe(self, name: str) -> dict[str, Any]:
        return parse_describe(*self._run(describe_argv(self.pcluster, name, self.region)))

    def create(self, name: str, config_path: str) -> dict[str, Any]:
        code, out = self._run(create_argv(self.pcluster, name, config_path, self.region))
        if code != 0:
            raise ClusterError(f"pcluster create-cluster {name} failed: {out.strip()[-2000:]}")
        return json.loads(out) if out.strip().startswith("{") else {}

    def delete(self, name: str) -> dict[str, Any]:
        """Ask for deletion; a cluster already gone is fine."""
        code, out = self._run(delete_argv(self.pcluster, name, self.region))
        if code != 0:
            state = parse_describe(code, out)
            if state["state"] == GONE:
                return state
            raise ClusterError(f"pcluster delete-cluster {name} failed: {out.strip()[-2000:]}")
        return parse_describe(0, out) if out.strip().startswith("{") else {}

    def list(self) -> list[dict[str, Any]]:
        code, out = self._run(list_argv(self.pcluster, self.region))
        if code != 0:
            raise ClusterError(f"pcluster list-clusters failed: {out.strip()[-2000:]}")
        return parse_list(out)

    def dryrun(self, name: str, config_path: str, suppress: tuple[str, ...] = ()) -> list[str]:
        return parse_dryrun(*self._run(dryrun_argv(self.pcluster, name, config_path, self.region, suppress)))

    async def describe_async(self, name: str) -> dict[str, Any]:
        import asyncio

        proc = await asyncio.create_subprocess_exec(*describe_argv(self.pcluster, name, self.region),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env=self.env)
        out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        return parse_describe(proc.returncode or 0, (out or err).decode("utf-8", "replace"))


# -- the head node's SSH host key, through a channel that is not the SSH connection itself ---------
#: cloud-init prints the new instance's host keys to the serial console between these lines, and
#: EC2 keeps that console output (GetConsoleOutput: signed by the account's credentials, from
#: EC2 itself). A man in the middle of the SSH connection cannot write there.
HOST_KEYS_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)
HOST_KEY = re.compile(r"\b(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) (AAAA[0-9A-Za-z+/]+={0,3})")
#: The strongest key type first: the one SciOps pins.
KEY_PREFERENCE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def host_keys_from_console(text: str) -> list[str]:
    """``["ssh-ed25519 AAAA…", …]`` from the last host-key block cloud-init printed (a reboot prints another)."""
    blocks = HOST_KEYS_BLOCK.findall(text or "")
    if not blocks:
        return []
    keys = {f"{kind} {data}" for kind, data in HOST_KEY.findall(blocks[-1])}
    return sorted(keys, key=lambda k: KEY_PREFERENCE.index(k.split()[0]))


def ec2_client(conn_id: str | None, region: str):
    """A boto3 EC2 client with the credentials (and endpoint, for tests) of an Airflow AWS connection."""
    import boto3

    from sciops.storage.root import connection_credentials

    creds, _, endpoint = connection_credentials(conn_id or "aws_default")
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)


def console_output(instance_id: str, region: str, aws_conn_id: str | None) -> str:
    """The instance's serial console output from EC2 (botocore decodes its base64)."""
    from botocore.exceptions import ClientError

    ec2 = ec2_client(aws_conn_id, region)
    try:
        try:   # the newest output (Nitro instances); older ones only have the buffered copy
            out = ec2.get_console_output(InstanceId=instance_id, Latest=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "UnsupportedOperation":
                raise
            out = ec2.get_console_output(InstanceId=instance_id)
    except ClientError as exc:
        raise ClusterError(f"cannot read the console output of head node {instance_id}: {exc}") from None
    return out.get("Output") or ""


def head_node_host_key(instance_id: str, region: str, aws_conn_id: str | None, wait_s: float | None = None,
                       pause_s: float = 15.0) -> str:
    """The head node's SSH host key (``"ssh-ed25519 AAAA…"``) from its console output, to pin for the run.

    EC2 posts console output shortly after boot, so this asks again for up to ``wait_s``
    (``SCIOPS_HOSTKEY_WAIT_SECONDS``, default 300). No key by then: :class:`ClusterError`,
    and nothing is sent to the head node.
    """
    wait_s = setting("SCIOPS_HOSTKEY_WAIT_SECONDS") if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        keys = host_keys_from_console(console_output(instance_id, region, aws_conn_id))
        if keys:
            return keys[0]
        if time.monotonic() + pause_s > deadline:
            raise ClusterError(f"head node {instance_id} printed no SSH host keys to its console in {wait_s:.0f} s "
                               "(cloud-init's '-----BEGIN SSH HOST KEY KEYS-----' block): its key cannot be pinned, "
                               "so nothing is sent to it. Use an AMI whose cloud-init prints host keys (the "
                               "ParallelCluster AMIs do), or raise SCIOPS_HOSTKEY_WAIT_SECONDS")
        time.sleep(pause_s)


def head_connection_problems(ssh_conn_id: str) -> list[str]:
    """Why the SSH connection cannot be the head node's: it must not pin a key nor skip the check.

    Each new cluster has a new head node key, pinned per run from its console output; a key in
    the connection would be the wrong one, and ``no_host_key_check`` would let anyone answer.
    """
    from sciops.connections import get_connection

    conn = get_connection(ssh_conn_id)
    if conn is None:
        return [f"no Airflow connection {ssh_conn_id!r}: add an SSH connection with the cluster's login and key"]
    extra = conn.extra_dejson or {}
    bad = [k for k in ("host_key", "known_hosts") if extra.get(k)]
    bad += [k for k in ("no_host_key_check", "allow_host_key_change", "ignore_hostkey_verification")
            if str(extra.get(k)).lower() == "true"]
    if not bad:
        return []
    return [f"connection {ssh_conn_id!r} sets {', '.join(bad)}: remove it. A new cluster's head node has a new key, "
            "which SciOps pins for the run from the instance's EC2 console output"]


def aws_env(conn_id: str | None) -> dict[str, str]:
    """Credentials (and an S3-compatible endpoint, for tests) of an Airflow AWS connection, as env vars."""
    from sciops.storage.root import connection_credentials

    creds, region, endpoint = connection_credentials(conn_id or "aws_default")
    env = {"AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key}
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


# -- the backend: a new cluster, driven through its head node like an existing Slurm cluster ------
#: Where runs work on the head node (its shared EBS volume) unless cluster_storage_root says.
WORK_ROOT = "/shared/sciops"


class PClusterBackend(ExistingBackend):
    """The ``parallelcluster`` backend: an AWS ParallelCluster 3 made for the run (``create_cluster``).

    Once the cluster exists it is an existing Slurm cluster reached at its head node's address
    (``host``) with the key pinned from EC2 (``host_key``). What differs: nothing is shared
    with this worker (the run folder goes there and back through the bucket), the settings are
    ``cluster.*`` and checked by pcluster's own validators, the cost is EC2's.
    """

    name = "parallelcluster"
    shares_files = False
    default_work_root = WORK_ROOT

    @classmethod
    def options_for(cls, cfg, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = super().options_for(cfg, cluster)
        if (cluster or {}).get("head_node_ip"):
            opts["host"] = cluster["head_node_ip"]
            opts["host_key"] = cluster.get("head_node_host_key")   # pinned by create_cluster
        return opts

    def where(self) -> str:
        c = with_defaults(self.cfg.cluster.given())
        return (f"new ParallelCluster in {c.get('region')}: {c['compute_instance_type']} × up to "
                f"{c['max_count']}{' (spot)' if c['spot'] else ''}")

    def settings(self, project: str, airflow_run_id: str) -> PClusterSettings:
        """The run's cluster settings, or ConfigError naming ``cluster.<key>`` / ``storage_root``."""
        from sciops.errors import ConfigError
        from sciops.run.runinfo import storage_for

        storage = storage_for(self.cfg)
        if storage.is_local:
            raise ConfigError([("storage_root", "the parallelcluster backend needs an s3:// storage root: the "
                                                "cluster stages the project in from the bucket and the results out "
                                                "to it")])
        settings, problems = settings_from(self.cfg.cluster, bucket=storage.bucket, run_id=airflow_run_id,
                                           project=project)
        if not problems:
            problems = [(name if name in ("memory", "run_id") else f"cluster.{name}", msg)
                        for name, msg in check_settings(settings, self.cfg.memory_mb)]
        if problems:
            raise ConfigError(problems)
        return settings

    def check_settings(self, project: str, airflow_run_id: str) -> None:
        self.settings(project, airflow_run_id)

    def check(self, project, airflow_run_id: str):
        """Every check of a cluster before it exists: settings, then ``pcluster --dryrun``.

        The dry run runs all of pcluster's own validators against the account (instance types,
        subnet, AMI, key pair, bucket) and creates nothing. ``SCIOPS_PCLUSTER_SUPPRESS`` lists
        validators to skip (comma-separated; the tests' moto endpoint cannot satisfy some). The
        launcher is probed on the head node once the cluster exists (:meth:`prepare`).
        """
        from sciops.errors import ConfigError
        from sciops.imaging.imagej import detect_launcher
        from sciops.run.project import safe_run_id

        settings = self.settings(project.name, airflow_run_id)
        problems = head_connection_problems(self.cfg.ssh_conn_id)
        if problems:
            raise ConfigError([("ssh_conn_id", p) for p in problems])
        path = write_cluster_config(project.run_dir(safe_run_id(airflow_run_id)), settings)
        suppress = tuple(setting("SCIOPS_PCLUSTER_SUPPRESS"))
        try:
            problems = PCluster(settings.region, env=aws_env(self.cfg.aws_conn_id)).dryrun(
                cluster_name(airflow_run_id), str(path), suppress)
        except ClusterError as exc:
            raise ConfigError([("backend", str(exc))]) from None
        if problems:
            raise ConfigError([("cluster", "pcluster's validators refused the cluster: "
                                + "; ".join(problems)[:3000])])
        log.info("pcluster dry run passed for %s (%s)", cluster_name(airflow_run_id), path)
        return {"kind": None, "note": "probed on the head node once the cluster exists (plan)"}, \
            detect_launcher(self.cfg.launcher)

    # -- the run folder goes to the cluster and back through the bucket ----------------------------
    def stage_out(self, storage, info) -> dict[str, Any]:
        """The worker holds the whole run folder (fetched before collate): it pushes it."""
        from sciops.storage import sync

        return sync.stage_out(storage, info.project, info.run_id, info.run_dir).as_dict()

    def prepare(self, info):
        from sciops.errors import SciOpsError

        if not (self.cluster or {}).get("head_node_ip"):
            raise SciOpsError("no head node address: create_cluster did not run or did not succeed")
        try:
            launcher = self.launcher(self.cfg.launcher, self.probe())
        except ClusterError as exc:
            raise SciOpsError(f"the new cluster's head node is not usable: {exc}") from None
        return info.model_copy(update={"launcher": launcher})

    def send_run(self, info, dirs) -> None:
        """Worker → bucket → head node: the manifest and job files of a run."""
        from sciops.storage import sync
        from sciops.phases import PHASES

        storage = info.storage()
        # work/phases/ is the worker's own bookkeeping: it never goes to the cluster and back (a
        # copy taken mid-phase would come back saying "running")
        sync.stage_out(storage, info.project, info.run_id, info.run_dir, exclude=[PHASES])
        self.head_node(["mkdir", "-p", *(self.cluster_path(d) for d in dirs)])
        self.aws(storage, ["s3", "sync", storage.uri(info.project, "output", info.run_id) + "/",
                           self.cluster_path(info.run_dir) + "/"])

    def fetch_run(self, info) -> None:
        """Head node → bucket → worker: everything the tasks wrote."""
        from sciops.storage import sync
        from sciops.phases import PHASES

        storage = info.storage()
        self.aws(storage, ["s3", "sync", self.cluster_path(info.run_dir) + "/",
                           storage.uri(info.project, "output", info.run_id) + "/"])
        sync.log_stats(sync.sync(storage.tree(info.project, "output", info.run_id), sync.LocalTree(info.run_dir),
                                 exclude=[PHASES], label=f"fetch {info.run_id}").as_dict())

    # -- cost: EC2 prices ---------------------------------------------------------------------------
    def _shape(self) -> dict[str, Any]:
        return with_defaults(self.cfg.cluster.given())

    def estimate(self, images: int, seconds_per_image: float) -> dict[str, Any]:
        from sciops.accounting import costs

        c = self._shape()
        return costs.estimate(images, seconds_per_image, backend=self.name, nodes=c["max_count"],
                              instance_type=c["compute_instance_type"], head_node_type=c["head_node_instance_type"],
                              region=c["region"], memory_mb=self.cfg.memory_mb)

    def budget_rates(self, run_dir: Path) -> dict[str, float] | None:
        """The head node and the min_count nodes cost from the cluster's creation on; each task its node's share."""
        if not self.cfg.budget_usd:
            return None
        from sciops.accounting import costs
        from sciops.phases import phase_path

        c = self._shape()
        prices = costs.load_prices()
        region, itype = c["region"], c["compute_instance_type"]
        head = costs.on_demand_price(prices, region, c["head_node_instance_type"])
        node = costs.on_demand_price(prices, region, itype)
        created = phase_path(run_dir, "cluster_create")
        since = json.loads(created.read_text())["start"] if created.exists() else time.time()
        fixed = head + c["min_count"] * node
        return {"budget_usd": self.cfg.budget_usd, "spent_usd": fixed * (time.time() - since) / 3600,
                "task_rate_usd_per_hour": node / costs.tasks_per_node(itype, self.cfg.memory_mb),
                "fixed_rate_usd_per_hour": fixed}

    def cost(self, info, work: Path) -> dict[str, Any]:
        """The cluster's EC2 instance lives × on-demand prices, cross-checked by the tasks' own node-hours."""
        from sciops.accounting import costs

        try:
            settings = self.settings(info.project, info.airflow_run_id)
            ec2 = ec2_client(self.cfg.aws_conn_id, settings.region)
            out = costs.pcluster_cost(ec2, cluster_name(info.airflow_run_id), settings.region, costs.load_prices(),
                                      volume_gb=settings.shared_storage_gb + settings.root_volume_gb)
            out["cross_check"] = costs.rate_cost(work, 0.0)["node_hours"]  # what the tasks themselves used
            return out
        except Exception as exc:  # noqa: BLE001 - a cost we cannot read is reported, not fatal
            log.warning("cost of the cluster could not be read from EC2 (%s: %s)", type(exc).__name__, exc)
            return {"kind": "ec2", "node_hours": {}, "compute_usd": 0.0, "storage_usd": 0.0, "total_usd": 0.0,
                    "error": f"{type(exc).__name__}: {exc}"[:500]}


def write_cluster_config(run_dir: Path | str, settings: PClusterSettings) -> Path:
    """``work/cluster.yaml``: the ParallelCluster config the dry run checks and create_cluster uses."""
    import yaml

    path = Path(run_dir, "work", "cluster.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build_config(settings), sort_keys=False))
    return path


Backend = PClusterBackend
