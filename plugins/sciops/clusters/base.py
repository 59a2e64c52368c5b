"""ClusterBackend: everything that differs between the places a run's array can run.

A backend is one class in one module, ``sciops.clusters.<name>`` (its ``Backend``), listed in
the registry (``sciops.clusters.MODULES``): the name is the ``backend`` parameter's value. It
declares what the run parameters need to know of it (:attr:`~ClusterBackend.name`,
:attr:`~ClusterBackend.schedulers`, :attr:`~ClusterBackend.form_sections`) and owns what differs:

- its settings and their checks before anything is spent (:meth:`check_settings`, cheap;
  :meth:`check`, which may reach the cluster), and the launcher to smoke-test with;
- where the run folder is on the cluster (:meth:`cluster_path`, ``shares_files``);
- staging the project in and the run folder out when the storage root is S3
  (:meth:`stage_in`, :meth:`stage_out`), and for a cluster without this worker's files
  sending the planned run there and fetching what it wrote (:meth:`send_run`, :meth:`fetch_run`);
- cost: the estimate before the run (:meth:`estimate`; with no run, for the planner,
  :meth:`estimate_for`), the rates the watch follows, the bill after;
- the runner (commands on the submit host) and the scheduler the array is driven through
  (:meth:`scheduler_args`: the trigger makes the same scheduler from them).

A backend is made two ways: for a run being checked or planned, from its config
(:meth:`for_run`, which knows the run's settings), and in ``run_array`` from the JSON
options the plan kept in the manifest (the constructor: only the runner and the scheduler
are used there). Creating and deleting an ephemeral cluster is not a backend method: the
``create_cluster`` / ``delete_cluster`` tasks do it, waiting in the triggerer.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).

if TYPE_CHECKING:  # no import at run time: the registry loads this module when the DAG is parsed
    from sciops.arrays.commands import CommandRunner
    from sciops.arrays.schedulers.base import Scheduler
    from sciops.run.config import RunConfig
    from sciops.run.project import Project
    from sciops.run.runinfo import RunInfo


class ClusterBackend(ABC):
    #: The ``backend`` parameter's value, and the name of the module that defines the class.
    name = "base"
    #: Schedulers it can drive (``sciops.arrays.schedulers``); the first is a run's when it names none.
    schedulers: tuple[str, ...] = ()
    #: The trigger form's sections whose fields apply to it (``sciops.run.config.SECTIONS``): a run that
    #: sets a field of another backend's section is refused.
    form_sections: tuple[str, ...] = ()
    #: Priced per EC2 instance type and node count (the planner offers those), not per task-hour.
    priced_per_instance_type = False
    #: The scheduler this backend object drives (one of :attr:`schedulers`).
    scheduler_name: str
    #: Python 3 that runs the task runner on the compute nodes.
    python = "python3"
    #: Do this worker and the cluster see the same run folder (same machine, or a shared filesystem)?
    shares_files = True
    #: Where runs work on the cluster when ``cluster_storage_root`` does not say (None: the same path as here).
    default_work_root: str | None = None
    #: Jobs run as another user (the cluster's), sharing a group with Airflow's: run folders are group-writable.
    group_writable = True
    #: The cluster is made for one run and deleted with it (``cluster_sweeper`` deletes it once the DAG run is
    #: over): an array left running goes with it, the array sweep does not reach for it.
    cluster_made_for_run = False
    #: The run's config and ``create_cluster``'s answer, set by :meth:`for_run` (None when made from a manifest).
    cfg: RunConfig | None = None
    cluster: dict[str, Any] | None = None

    @abstractmethod
    def runner(self) -> CommandRunner: ...

    @abstractmethod
    def scheduler_args(self, work_dir: str) -> dict[str, Any]:
        """The arguments of :meth:`scheduler` (JSON: the trigger makes the same scheduler from them)."""

    def scheduler(self, work_dir: str) -> Scheduler:
        """The scheduler the array is driven through (``work_dir``: the run's ``work/`` as the cluster sees it)."""
        from sciops.arrays.schedulers import get_scheduler

        return get_scheduler(self.scheduler_name, **self.scheduler_args(work_dir))

    def close(self) -> None:
        """Release connections (SSH) the backend opened."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- made for a run ------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def options_for(cls, cfg: RunConfig, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
        """Constructor arguments for the run (JSON: the manifest keeps them for ``run_array``)."""

    @classmethod
    def for_run(cls, cfg: RunConfig, cluster: dict[str, Any] | None = None):
        """The backend of a run being checked, planned or recorded (``cluster``: ``create_cluster``'s answer)."""
        backend = cls(**cls.options_for(cfg, cluster))
        backend.cfg, backend.cluster = cfg, cluster
        return backend

    def where(self) -> str:
        """Where the run's array runs, as the start message says it."""
        return self.name

    # -- paths ---------------------------------------------------------------------------------
    def cluster_path(self, path: Path | str) -> str:
        """A path under this worker's root as the cluster sees it (``cluster_storage_root``)."""
        root = self.cfg.cluster_storage_root or self.default_work_root
        if not root:
            return str(path)
        from sciops.run.runinfo import local_root

        return str(Path(root, Path(path).resolve().relative_to(local_root(self.cfg))))

    # -- checks before anything is spent ----------------------------------------------------------
    def check_settings(self, project: str, airflow_run_id: str) -> None:
        """Settings that need nothing remote. Raises ConfigError naming the field."""

    @abstractmethod
    def check(self, project: Project, airflow_run_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Reach the cluster (when there is one) and find ImageJ: ``(launcher, smoke launcher here or None)``."""

    # -- storage -----------------------------------------------------------------------------
    @abstractmethod
    def stage_in(self, storage, info: RunInfo) -> dict[str, Any]:
        """The project in the S3 storage root → the run's working copy (where the cluster reads it)."""

    @abstractmethod
    def stage_out(self, storage, info: RunInfo) -> dict[str, Any]:
        """The run folder → ``<project>/output/<run_id>/`` in the S3 storage root."""

    def prepare(self, info: RunInfo) -> RunInfo:
        """Before the manifest is written (``plan``): what only the cluster itself can say (its launcher)."""
        return info

    def send_run(self, info: RunInfo, dirs: list[Path]) -> None:
        """After the manifest is written: the run folder to a cluster that does not share this worker's files."""

    def fetch_run(self, info: RunInfo) -> None:
        """Before collating: what the tasks wrote, from a cluster that does not share this worker's files."""

    # -- cost --------------------------------------------------------------------------------------
    def known_slots(self) -> int | None:
        """Array tasks that run at once, when this backend knows it (``images_per_task: 0`` uses it)."""
        return None

    def estimate(self, images: int, seconds_per_image: float) -> dict[str, Any]:
        """Duration and cost of ``images`` at ``seconds_per_image`` (past runs), on this backend, for this run."""
        return self.estimate_for(images, seconds_per_image, nodes=self.cfg.slots or 1,
                                 hourly_rate_usd=self.cfg.hourly_rate_usd)

    @classmethod
    def estimate_for(cls, images: int, seconds_per_image: float, *, nodes: int = 1, hourly_rate_usd: float = 0.0,
                     instance_type: str | None = None, head_node_type: str | None = None, region: str | None = None,
                     memory_mb: int | None = None, prices: dict[str, Any] | None = None) -> dict[str, Any]:
        """Duration and cost of ``images`` at ``seconds_per_image`` (task-seconds) with no run: the planner's.

        Here ``nodes`` tasks at once, each task-hour at ``hourly_rate_usd``. A backend priced per
        instance type (:attr:`priced_per_instance_type`) reads ``nodes`` as nodes of ``instance_type``
        (and ``head_node_type``, ``region``, ``memory_mb`` per task, ``prices``), and ignores the rate.
        """
        from sciops.accounting.costs import rate_estimate

        return {"backend": cls.name, **rate_estimate(images, seconds_per_image, concurrent_tasks=nodes,
                                                     hourly_rate_usd=hourly_rate_usd)}

    def budget_rates(self, run_dir: Path) -> dict[str, float] | None:
        """What the array's watch needs to follow the spend: the cap, the rates, what is spent already."""
        if not self.cfg.budget_usd:
            return None
        return {"budget_usd": self.cfg.budget_usd, "spent_usd": 0.0,
                "task_rate_usd_per_hour": self.cfg.hourly_rate_usd, "fixed_rate_usd_per_hour": 0.0}

    def cost(self, info: RunInfo, work: Path) -> dict[str, Any]:
        """Node-hours and USD of the run: task-hours × the facility's rate."""
        from sciops.accounting.costs import rate_cost

        return rate_cost(work, self.cfg.hourly_rate_usd)
