"""The ``pcluster`` command boundary: argv builders, the parsing of its JSON answers, and
:class:`PCluster`, which runs them (blocking, for the operators; awaited, for the trigger).

``pcluster`` runs from its own virtualenv (``aws-parallelcluster`` pins versions that
conflict with Airflow's): its path is a setting (``SCIOPS_PCLUSTER``, default
``.venv-pcluster/bin/pcluster`` of this checkout), never imported here.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from sciops.errors import ClusterError
from sciops.settings import setting

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
    out = [f"{msg.get('level', '')} {msg.get('type', '')}: {msg.get('message', '')}".strip()
           for msg in data.get("configurationValidationErrors", []) + data.get("validationMessages", [])
           if msg.get("level") in (None, "ERROR")]
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
