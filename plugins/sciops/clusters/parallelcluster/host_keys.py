"""The head node's SSH host key, through a channel that is not the SSH connection itself."""
from __future__ import annotations

import re
import time

from sciops.clusters.parallelcluster.aws import ec2_client
from sciops.errors import ClusterError
from sciops.settings import setting

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

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
