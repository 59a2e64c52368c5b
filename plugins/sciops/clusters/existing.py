"""The ``existing`` backend: a lab's own Grid Engine (or Slurm) cluster reached over SSH.

The head node is an Airflow SSH connection. The storage root is on the cluster's shared
filesystem (NFS in real clusters), mounted on the Airflow worker too, possibly under
another path (``cluster_storage_root``): the run's manifest, runner, macro and outputs
live in ``output/<run_id>/`` there, written by one side and read by the other.
"""
from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

from sciops.clusters.base import ClusterBackend
from sciops.errors import ClusterError

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

if TYPE_CHECKING:   # imported when used: the registry loads this module when the DAG is parsed
    from sciops.arrays.ssh import SSHRunner

#: How the head node's AWS CLI retries a request (each S3 call of ``aws s3 sync``): standard mode (exponential
#: backoff with jitter; throttling such as S3's ``SlowDown`` and 5xx answers are retried) with 10 attempts. The
#: CLI's own default (v2: standard, 3 attempts; v1: legacy, 5) gave up a sync after 2 retries of one SlowDown;
#: Airflow's retry then ran the whole sync again. Not ``adaptive``: AWS documents it as experimental, and its
#: client-side rate limiting can slow a whole sync down after a few throttles. Set in the command's own
#: environment (``env``), so no profile on the head node is needed or changed; CLIs v1 and v2 read both.
AWS_RETRY_ENV = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10"}

#: What a head node must have, per scheduler.
SCHEDULER_COMMANDS = {"sge": ("qsub", "qstat", "qacct", "qdel"), "slurm": ("sbatch", "squeue", "sacct", "scancel")}

# One fixed probe (no user input in it): which scheduler commands, python and ImageJ exist.
PROBE = ("for c in {commands} {python} java Xvfb ImageJ-linux64; do printf '%s=' \"$c\"; "
         "command -v \"$c\" || echo; done; test -f /usr/share/java/ij.jar && echo ij_jar=/usr/share/java/ij.jar "
         "|| echo ij_jar=; r=${{SCIOPS_IJ_PLUGINS:-/usr/local/share/sciops/imagej}}; "
         "test -f \"$r/plugins/bioformats_package.jar\" && echo \"ij_plugins=$r\" || echo ij_plugins=")


class ExistingBackend(ClusterBackend):
    """
    :param ssh_conn_id: Airflow SSH connection of the head node.
    :param scheduler: one of :attr:`schedulers` (the first when None).
    :param scheduler_options: passed to the scheduler (queue, project, resources).
    :param python: Python 3 on the compute nodes (the task runner is stdlib-only).
    :param host: the head node's address when it is not the connection's (a new ParallelCluster).
    :param host_key: that head node's SSH host key (``"ssh-ed25519 AAAA…"``), pinned for the run.
    """

    name = "existing"
    schedulers = ("sge", "slurm")
    form_sections = ("Existing cluster (SSH)",)

    def __init__(self, ssh_conn_id: str, scheduler: str | None = None,
                 scheduler_options: dict[str, Any] | None = None, python: str = "python3", host: str | None = None,
                 host_key: str | None = None):
        self.ssh_conn_id = ssh_conn_id
        self.host = host
        self.host_key = host_key
        self.scheduler_name = scheduler or self.schedulers[0]
        self.scheduler_options = scheduler_options or {}
        self.python = python
        self._runner: SSHRunner | None = None

    def runner(self) -> SSHRunner:
        """The head node's SSH runner (one connection, reused until :meth:`close`)."""
        if self._runner is None:
            from sciops.arrays.ssh import SSHRunner

            self._runner = SSHRunner(self.ssh_conn_id, host=self.host, host_key=self.host_key)
        return self._runner

    def scheduler_args(self, work_dir: str) -> dict[str, Any]:
        return dict(self.scheduler_options)

    @classmethod
    def options_for(cls, cfg, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
        if cfg.scheduler == "slurm":
            sched = {"partition": cfg.queue, "account": cfg.accounting_project, "exclusive": cfg.exclusive,
                     "gres": "fiji:1" if cfg.one_per_host else None}
        else:
            sched = {"queue": cfg.queue, "project": cfg.accounting_project, "memory_resource": cfg.memory_resource,
                     "exclusive": cfg.exclusive, "one_per_host": cfg.one_per_host}
        return {"ssh_conn_id": cfg.ssh_conn_id, "scheduler": cfg.scheduler, "python": cfg.cluster_python,
                "scheduler_options": sched}

    def where(self) -> str:
        return f"existing {self.scheduler_name} cluster via {self.ssh_conn_id}"

    # -- checks ---------------------------------------------------------------------------------
    def check(self, project, airflow_run_id: str):
        """Reach the head node, find its tools and ImageJ, see the project. Cheap.

        The macro is smoke-run on this worker when it has ImageJ too; else the cluster's first
        task is the test.
        """
        from sciops.errors import ConfigError
        from sciops.imaging.imagej import confined, detect_launcher
        from sciops.run.runinfo import storage_for

        on_s3 = not storage_for(self.cfg).is_local
        try:
            launcher = self.launcher(self.cfg.launcher, self.probe())
            runner = self.runner()
            # On S3 the head node stages the project into the working copy: it must see that folder.
            where = self.cluster_path(project.root if on_s3 else project.input_dir)
            if runner.run(["test", "-d", where], check=False).returncode != 0:
                raise ConfigError([("cluster_storage_root", f"the head node does not see {where}: mount the "
                                                            f"{'work' if on_s3 else 'storage'} root there, or set "
                                                            "cluster_storage_root to where it is")])
            if on_s3 and runner.run(["aws", "--version"], check=False).returncode != 0:
                raise ConfigError([("storage_root", "the head node has no AWS CLI ('aws'), which stages the project "
                                                    "in and out of S3: install it there (e.g. apt install awscli)")])
        except ClusterError as exc:
            raise ConfigError([("ssh_conn_id", str(exc))]) from None
        return launcher, confined(detect_launcher(self.cfg.launcher), project)   # the smoke run: on this worker

    # -- storage: the head node runs the AWS CLI next to the files --------------------------------
    def head_node(self, argv: list[str]) -> None:
        """Run argv on the head node (quoted by the runner)."""
        self.runner().run(argv)

    def aws(self, storage, argv: list[str]) -> None:
        """``aws <argv>`` on the head node (credentials: its own environment or instance role), retrying as
        :data:`AWS_RETRY_ENV` says: ``env VAR=value ... aws ...``, every word quoted by the runner."""
        extra = ["--only-show-errors", "--no-progress", "--region", storage.region]
        if storage.endpoint_url:
            extra += ["--endpoint-url", storage.endpoint_url]
        self.head_node(["env", *(f"{k}={v}" for k, v in sorted(AWS_RETRY_ENV.items())), "aws", *argv, *extra])

    def stage_in(self, storage, info) -> dict[str, Any]:
        start = time.time()
        self.aws(storage, ["s3", "sync", storage.uri(info.project) + "/", self.cluster_path(info.project_root) + "/",
                           "--exclude", "*", "--include", "input/*", "--include", "src/*", "--include", "bin/*",
                           "--include", "project.yaml"])
        return {"direction": "down", "by": "head node (aws s3 sync)", "seconds": round(time.time() - start, 3)}

    def stage_out(self, storage, info) -> dict[str, Any]:
        start = time.time()
        self.aws(storage, ["s3", "sync", self.cluster_path(info.run_dir) + "/",
                           storage.uri(info.project, "output", info.run_id) + "/"])
        return {"direction": "up", "by": "head node (aws s3 sync)", "seconds": round(time.time() - start, 3)}

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
        from sciops.imaging.imagej import choose_launcher

        launcher = choose_launcher(kind, found.get("ImageJ-linux64"), found.get("java"), found.get("Xvfb"),
                                   found.get("ij_jar"), found.get("ij_plugins") or None)
        if launcher:
            return launcher
        raise ClusterError(f"no ImageJ for launcher {kind!r} on the head node of {self.ssh_conn_id!r}: install Fiji "
                           "(ImageJ-linux64 on PATH) or Debian's imagej + xvfb + a JRE")

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


Backend = ExistingBackend
