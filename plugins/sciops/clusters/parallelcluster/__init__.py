"""The ``parallelcluster`` backend: AWS ParallelCluster 3 (Slurm), made for one run.

:class:`PClusterBackend` is the backend; the modules beside it are what it stands on:

- ``shapes``: the EC2 instance types SciOps knows (vCPUs, memory) and what of a node tasks get;
- ``planner``: the what-if planner's instance types × node counts (each option this backend's
  :meth:`~PClusterBackend.estimate_for`);
- ``settings``: the run's ``cluster`` settings, the checks that must pass before anything is
  created, the cluster name derived from the run id (a retried create finds the same
  cluster), and the ParallelCluster config YAML made from them;
- ``cli``: the ``pcluster`` command boundary (argv builders, the parsing of its JSON answers,
  :class:`PCluster`, which runs them: blocking, for the operators; awaited, for the trigger);
- ``host_keys``: the new head node's SSH host key, read from its EC2 console output;
- ``aws``: the run's Airflow AWS connection as environment variables (for ``pcluster``,
  never on its command line) or as an EC2 client.

The operators are in ``sciops.operators.cluster``, the trigger in ``sciops.triggers.cluster``,
the sweeper in ``dags/cluster_sweeper.py``. Their names are re-exported here (``pc.PCluster``);
a test that replaces one replaces it in the module that uses it (``host_keys.console_output``).
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sciops.clusters.existing import ExistingBackend
from sciops.errors import ClusterError
from sciops.settings import setting

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

if TYPE_CHECKING:
    from sciops.clusters.parallelcluster.settings import PClusterSettings

#: What the modules beside the backend offer, re-exported here when first asked (``pc.PCluster``): the
#: registry loads this package when the DAG is parsed, and none of them is needed then.
EXPORTS = {
    "shapes": ("INSTANCE_TYPES", "NODE_RESERVED_MB", "fits", "tasks_per_node"),
    "planner": ("PLANNER_NODES", "check_types", "priced_types", "tradeoff"),   # and planner.estimate
    "settings": ("AMI", "BUCKET", "KEY_NAME", "REGION", "REQUIRED", "SUBNET", "TAG_VALUE", "PClusterSettings",
                 "build_config", "check_settings", "cluster_name", "settings_from", "with_defaults",
                 "write_cluster_config"),
    "cli": ("CLUSTER_STATES", "CREATING", "DELETING", "DRYRUN_OK", "FAILED", "GONE", "READY", "PCluster",
            "create_argv", "default_pcluster", "delete_argv", "describe_argv", "dryrun_argv", "list_argv",
            "parse_describe", "parse_dryrun", "parse_list"),
    "host_keys": ("HOST_KEY", "HOST_KEYS_BLOCK", "KEY_PREFERENCE", "console_output", "head_connection_problems",
                  "head_node_host_key", "host_keys_from_console"),
    "aws": ("aws_env", "ec2_client"),
}
_EXPORTED = {name: module for module, names in EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _EXPORTED:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


log = logging.getLogger(__name__)

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
    schedulers = ("slurm",)   # ParallelCluster 3 is Slurm only
    #: driven over SSH like an existing cluster: that section's fields apply too
    form_sections = ("Existing cluster (SSH)", "ParallelCluster")
    priced_per_instance_type = True
    shares_files = False
    default_work_root = WORK_ROOT
    cluster_made_for_run = True

    @classmethod
    def options_for(cls, cfg, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = super().options_for(cfg, cluster)
        if (cluster or {}).get("head_node_ip"):
            opts["host"] = cluster["head_node_ip"]
            opts["host_key"] = cluster.get("head_node_host_key")   # pinned by create_cluster
        return opts

    def where(self) -> str:
        c = self._shape()
        return (f"new ParallelCluster in {c.get('region')}: {c['compute_instance_type']} × up to "
                f"{c['max_count']}{' (spot)' if c['spot'] else ''}")

    def settings(self, project: str, airflow_run_id: str) -> PClusterSettings:
        """The run's cluster settings, or ConfigError naming ``cluster.<key>`` / ``storage_root``."""
        from sciops.clusters.parallelcluster.settings import check_settings, settings_from
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
        from sciops.clusters.parallelcluster.aws import aws_env
        from sciops.clusters.parallelcluster.cli import PCluster
        from sciops.clusters.parallelcluster.host_keys import head_connection_problems
        from sciops.clusters.parallelcluster.settings import cluster_name, write_cluster_config
        from sciops.errors import ConfigError
        from sciops.imaging.imagej import confined, detect_launcher
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
            confined(detect_launcher(self.cfg.launcher), project)   # the smoke run: on this worker

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
        """The run's cluster settings, defaults filled in."""
        from sciops.clusters.parallelcluster.settings import with_defaults

        return with_defaults(self.cfg.cluster.given())

    def estimate(self, images: int, seconds_per_image: float) -> dict[str, Any]:
        c = self._shape()
        return self.estimate_for(images, seconds_per_image, nodes=c["max_count"],
                                 instance_type=c["compute_instance_type"], head_node_type=c["head_node_instance_type"],
                                 region=c["region"], memory_mb=self.cfg.memory_mb)

    @classmethod
    def estimate_for(cls, images: int, seconds_per_image: float, *, nodes: int = 1, hourly_rate_usd: float = 0.0,
                     instance_type: str | None = None, head_node_type: str | None = None, region: str | None = None,
                     memory_mb: int | None = None, prices: dict[str, Any] | None = None) -> dict[str, Any]:
        """``nodes`` compute nodes of ``instance_type`` at on-demand prices, and the head node
        (``planner.estimate``); no hourly rate."""
        from sciops.clusters.parallelcluster.planner import estimate

        return {"backend": cls.name, **estimate(images, seconds_per_image, nodes=nodes, instance_type=instance_type,
                                                head_node_type=head_node_type, region=region, memory_mb=memory_mb,
                                                prices=prices)}

    @classmethod
    def check_instance_types(cls, instance_types, region: str, prices: dict[str, Any] | None = None) -> list[str]:
        """The instance types asked for (all priced ones if none), or ``costs.PlannerError`` naming the known ones."""
        from sciops.clusters.parallelcluster.planner import check_types

        return check_types(instance_types, region, prices)

    @classmethod
    def tradeoff(cls, images: int, seconds_per_image: float, **kwargs: Any) -> dict[str, Any]:
        """Every instance type × node count and the pick (``planner.tradeoff``: region, instance_types,
        node_counts, memory_mb, deadline_s, prices)."""
        from sciops.clusters.parallelcluster.planner import tradeoff

        return tradeoff(images, seconds_per_image, **kwargs)

    def budget_rates(self, run_dir: Path) -> dict[str, float] | None:
        """The head node and the min_count nodes cost from the cluster's creation on; each task its node's share."""
        if not self.cfg.budget_usd:
            return None
        from sciops.accounting import costs
        from sciops.clusters.parallelcluster.shapes import tasks_per_node
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
                "task_rate_usd_per_hour": node / tasks_per_node(itype, self.cfg.memory_mb),
                "fixed_rate_usd_per_hour": fixed}

    def cost(self, info, work: Path) -> dict[str, Any]:
        """The cluster's EC2 instance lives × on-demand prices, cross-checked by the tasks' own node-hours."""
        from sciops.accounting import costs
        from sciops.clusters.parallelcluster.aws import ec2_client
        from sciops.clusters.parallelcluster.settings import cluster_name

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


Backend = PClusterBackend

__all__ = ["WORK_ROOT", "Backend", "PClusterBackend", *_EXPORTED]
