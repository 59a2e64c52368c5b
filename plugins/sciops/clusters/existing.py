"""The ``existing`` backend: a lab's own Grid Engine (or Slurm) cluster reached over SSH.

The head node is an Airflow SSH connection. The storage root is on the cluster's shared
filesystem (NFS in real clusters), mounted on the Airflow worker too, possibly under
another path (``cluster_storage_root``): the run's manifest, runner, macro and outputs
live in ``output/<run_id>/`` there, written by one side and read by the other.
"""
from __future__ import annotations

import shlex
from typing import Any

from sciops.clusters.base import ClusterBackend
from sciops.errors import ClusterError
from sciops.runners import SSHRunner
from sciops.schedulers import get_scheduler
from sciops.schedulers.base import Scheduler

#: What a head node must have, per scheduler.
SCHEDULER_COMMANDS = {"sge": ("qsub", "qstat", "qacct", "qdel"), "slurm": ("sbatch", "squeue", "sacct", "scancel")}

# One fixed probe (no user input in it): which scheduler commands, python and ImageJ exist.
PROBE = ("for c in {commands} {python} java Xvfb ImageJ-linux64; do printf '%s=' \"$c\"; "
         "command -v \"$c\" || echo; done; test -f /usr/share/java/ij.jar && echo ij_jar=/usr/share/java/ij.jar "
         "|| echo ij_jar=")


class ExistingBackend(ClusterBackend):
    """
    :param ssh_conn_id: Airflow SSH connection of the head node.
    :param scheduler: ``sge`` or ``slurm``.
    :param scheduler_options: passed to the scheduler (queue, project, resources).
    :param python: Python 3 on the compute nodes (the task runner is stdlib-only).
    :param host: the head node's address when it is not the connection's (a new ParallelCluster).
    :param host_key: that head node's SSH host key (``"ssh-ed25519 AAAA…"``), pinned for the run.
    """

    name = "existing"

    def __init__(self, ssh_conn_id: str, scheduler: str = "sge", scheduler_options: dict[str, Any] | None = None,
                 python: str = "python3", host: str | None = None, host_key: str | None = None):
        self.ssh_conn_id = ssh_conn_id
        self.host = host
        self.host_key = host_key
        self.scheduler_name = scheduler
        self.scheduler_options = scheduler_options or {}
        self.python = python
        self._runner: SSHRunner | None = None

    def runner(self) -> SSHRunner:
        if self._runner is None:
            self._runner = SSHRunner(self.ssh_conn_id, host=self.host, host_key=self.host_key)
        return self._runner

    def scheduler(self, work_dir: str) -> Scheduler:
        return get_scheduler(self.scheduler_name, **self.scheduler_options)

    def probe(self) -> dict[str, str]:
        """Reach the head node and see what it has. Raises ClusterError with the reason."""
        commands = SCHEDULER_COMMANDS[self.scheduler_name]
        script = PROBE.format(commands=" ".join(commands), python=shlex.quote(self.python))
        try:
            result = self.runner().run(["sh", "-c", script], check=False, timeout=60)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
            raise ClusterError(f"cannot reach the head node through SSH connection {self.ssh_conn_id!r}: {exc}") from exc
        found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        missing = [c for c in (*commands, self.python) if not found.get(c)]
        if missing:
            raise ClusterError(f"head node of {self.ssh_conn_id!r} lacks {', '.join(missing)} on PATH "
                               f"(is this a {self.scheduler_name} submit host?)")
        return found

    def launcher(self, kind: str, found: dict[str, str]) -> dict[str, Any]:
        """The ImageJ launcher on the cluster, from :meth:`probe`'s answer."""
        from sciops.imagej import choose_launcher

        launcher = choose_launcher(kind, found.get("ImageJ-linux64"), found.get("java"), found.get("Xvfb"),
                                   found.get("ij_jar"))
        if launcher:
            return launcher
        raise ClusterError(f"no ImageJ for launcher {kind!r} on the head node of {self.ssh_conn_id!r}: install Fiji "
                           "(ImageJ-linux64 on PATH) or Debian's imagej + xvfb + a JRE")

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
