"""The bodies of the ``fiji_project`` tasks, free of Airflow so they are plain to test.

sync_up → validate → stage_in → plan → run_array → collate → stage_out → sync_down → record.
Each phase writes its start, end and outcome to ``output/<run_id>/work/phases/<phase>.json``;
``record`` turns them into ``run.json``. The storage steps return ``None`` when they have
nothing to do (a local storage root, no LAN folder); the DAG turns that into a skip.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sciops import config as config_mod
from sciops.errors import ConfigError, SciOpsError, StorageError
from sciops.imagej import detect_launcher, require_launcher, smoke_candidates, smoke_run
from sciops.project import (Project, chunk, expected_outputs, match_images, read_manifest, safe_run_id, sha256,
                            stage_job_files, write_json)
from sciops.storage import PROJECT_PARTS, get_storage, work_root

log = logging.getLogger(__name__)
#: Images fetched from S3 for the smoke run (it needs a few non-empty ones).
SMOKE_FETCH = 6


PHASES = "work/phases"


def _phase_path(run_dir: Path | str, name: str) -> Path:
    return Path(run_dir, PHASES, f"{name}.json")


def phase_start(run_dir: Path | str, name: str, start: float | None = None, keep_start: bool = False) -> None:
    """Mark a phase as running. ``keep_start``: a re-attached task keeps the first start time."""
    path = _phase_path(run_dir, name)
    if keep_start and path.exists():
        rec = json.loads(path.read_text())
        if rec.get("status") == "running":
            return
    write_json(path, {"phase": name, "start": start or time.time(), "status": "running"})


def phase_end(run_dir: Path | str, name: str, error: BaseException | None = None) -> None:
    path = _phase_path(run_dir, name)
    rec = json.loads(path.read_text()) if path.exists() else {"phase": name, "start": time.time()}
    rec["end"] = time.time()
    rec["status"] = "failed" if error else "success"
    if error:
        rec["error"] = f"{type(error).__name__}: {error}"[:4000]
    else:
        rec.pop("error", None)
    write_json(path, rec)


@contextmanager
def phase(run_dir: Path | str, name: str, start: float | None = None) -> Iterator[None]:
    """Record one phase's start, end and outcome (rewritten on a retry: keyed by phase name)."""
    phase_start(run_dir, name, start)
    try:
        yield
    except BaseException as exc:
        phase_end(run_dir, name, exc)
        raise
    phase_end(run_dir, name)


#: Where runs work on a ParallelCluster head node (its shared EBS volume) unless cluster_storage_root says.
PCLUSTER_WORK_ROOT = "/shared/sciops"


def shares_files(cfg: config_mod.RunConfig) -> bool:
    """Do this worker and the cluster see the same run folder? Not for an ephemeral AWS cluster."""
    return cfg.backend != "parallelcluster"


def backend_options(cfg: config_mod.RunConfig, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """Constructor arguments of the run's cluster backend (JSON, kept in the manifest).

    ``cluster``: what ``create_cluster`` returned (the head node's address), for parallelcluster.
    """
    if cfg.backend == "local":
        return {"slots": cfg.slots}
    if cfg.scheduler == "slurm":
        sched = {"partition": cfg.queue, "account": cfg.accounting_project, "exclusive": cfg.exclusive,
                 "gres": "fiji:1" if cfg.one_per_host else None}
    else:
        sched = {"queue": cfg.queue, "project": cfg.accounting_project, "memory_resource": cfg.memory_resource,
                 "exclusive": cfg.exclusive, "one_per_host": cfg.one_per_host}
    opts = {"ssh_conn_id": cfg.ssh_conn_id, "scheduler": cfg.scheduler, "python": cfg.cluster_python,
            "scheduler_options": sched}
    if cfg.backend == "parallelcluster" and (cluster or {}).get("head_node_ip"):
        opts["host"] = cluster["head_node_ip"]
        opts["host_key"] = cluster.get("head_node_host_key")   # pinned by create_cluster
    return opts


def storage_of(conf: dict[str, Any] | config_mod.RunConfig):
    """The run's storage root (``storage_root`` / ``aws_conn_id``, else the environment's)."""
    get = conf.get if isinstance(conf, dict) else lambda k: getattr(conf, k)
    refused = config_mod.deployment_problems({k: get(k) for k in ("storage_root", "aws_conn_id")})
    if refused:  # before the root is opened: a refused root is never listed
        raise ConfigError(refused)
    try:
        return get_storage(get("storage_root"), get("aws_conn_id"))
    except StorageError as exc:
        raise ConfigError([("storage_root", str(exc))]) from None


def local_root(cfg: config_mod.RunConfig) -> Path:
    """The folder on this machine that holds the projects runs work in (and the cluster mounts)."""
    storage = storage_of(cfg)
    return storage.root if storage.is_local else work_root()


def cluster_path(path: Path | str, cfg: config_mod.RunConfig) -> str:
    """A path under the local root as the cluster sees it (``cluster_storage_root``)."""
    root = cfg.cluster_storage_root or (PCLUSTER_WORK_ROOT if cfg.backend == "parallelcluster" else None)
    if not root:
        return str(path)
    rel = Path(path).resolve().relative_to(local_root(cfg))
    return str(Path(root, rel))


def check_cluster(cfg: config_mod.RunConfig, project: Project) -> dict[str, Any]:
    """For ``existing``: reach the head node, find its tools and ImageJ, see the project. Cheap."""
    from sciops.clusters import get_backend
    from sciops.errors import ClusterError

    backend = get_backend(cfg.backend, **backend_options(cfg))
    on_s3 = not storage_of(cfg).is_local
    try:
        found = backend.probe()
        launcher = backend.launcher(cfg.launcher, found)
        runner = backend.runner()
        # On S3 the head node stages the project into the working copy: it must see that folder.
        where = cluster_path(project.root if on_s3 else project.input_dir, cfg)
        if runner.run(["test", "-d", where], check=False).returncode != 0:
            raise ConfigError([("cluster_storage_root", f"the head node does not see {where}: mount the "
                                                        f"{'work' if on_s3 else 'storage'} root there, or set "
                                                        "cluster_storage_root to where it is")])
        if on_s3 and runner.run(["aws", "--version"], check=False).returncode != 0:
            raise ConfigError([("storage_root", "the head node has no AWS CLI ('aws'), which stages the project "
                                                "in and out of S3: install it there (e.g. apt install awscli)")])
    except ClusterError as exc:
        raise ConfigError([("ssh_conn_id", str(exc))]) from None
    finally:
        backend.close()
    return launcher


def check_budget(cfg: config_mod.RunConfig, project: str, images: int, macro_sha: str) -> dict[str, Any] | None:
    """Estimate the run from past runs of the same macro; ConfigError on ``budget_usd`` if over.

    Without a past run there is nothing to estimate from: the cap is then enforced while
    the array runs (``run_array`` checks the spend at every poll).
    """
    from sciops import costs, ledger

    try:
        perf = ledger.past_performance(macro_sha256=macro_sha, project=project)
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not block a run without a budget
        if cfg.budget_usd:
            raise ConfigError([("budget_usd", f"the run ledger cannot be read to estimate the run "
                                              f"({type(exc).__name__}: {exc}); fix the sciops_ledger connection "
                                              "or remove the budget")]) from None
        return None
    if not perf:
        if cfg.budget_usd:
            log.info("no past run of this macro: no estimate; the %.2f USD cap is enforced while it runs",
                     cfg.budget_usd)
        return None
    if cfg.backend == "parallelcluster":
        from sciops.clusters.parallelcluster import with_defaults

        c = with_defaults(cfg.cluster.given())
        est = costs.estimate(images, perf["seconds_per_image"], backend=cfg.backend, nodes=c["max_count"],
                             instance_type=c["compute_instance_type"], head_node_type=c["head_node_instance_type"],
                             region=c["region"], memory_mb=cfg.memory_mb)
    else:
        est = costs.estimate(images, perf["seconds_per_image"], backend=cfg.backend,
                             nodes=cfg.slots or 1, hourly_rate_usd=cfg.hourly_rate_usd)
    est["from_runs"] = perf["runs"]
    est["seconds_per_image"] = perf["seconds_per_image"]
    log.info("estimate from %d past run(s) of this macro: %.1f task-hours, %.0f s, %.2f USD", perf["runs"],
             est["task_hours"], est["duration_s"], est["cost_usd"])
    if cfg.budget_usd and est["cost_usd"] > cfg.budget_usd:
        raise ConfigError([("budget_usd", f"the run is estimated at {est['cost_usd']:.2f} USD ({images} images × "
                                          f"{perf['seconds_per_image']:.2f} s per image from {perf['runs']} past "
                                          f"run(s)), over the budget of {cfg.budget_usd:.2f} USD: raise budget_usd, "
                                          "or run fewer images")])
    return est


def pcluster_settings(cfg: config_mod.RunConfig, project: str, airflow_run_id: str):
    """The run's ParallelCluster settings, or ConfigError naming ``cluster.<key>`` / ``storage_root``."""
    from sciops.clusters import parallelcluster as pc

    storage = storage_of(cfg)
    if storage.is_local:
        raise ConfigError([("storage_root", "the parallelcluster backend needs an s3:// storage root: the cluster "
                                            "stages the project in from the bucket and the results out to it")])
    settings, problems = pc.settings_from(cfg.cluster, bucket=storage.bucket, run_id=airflow_run_id, project=project)
    if not problems:
        problems = [(name if name in ("memory", "run_id") else f"cluster.{name}", msg)
                    for name, msg in pc.check_settings(settings, cfg.memory_mb)]
    if problems:
        raise ConfigError(problems)
    return settings


def write_cluster_config(run_dir: Path | str, settings) -> Path:
    """``work/cluster.yaml``: the ParallelCluster config the dry run checks and create_cluster uses."""
    import yaml

    from sciops.clusters import parallelcluster as pc

    path = Path(run_dir, "work", "cluster.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(pc.build_config(settings), sort_keys=False))
    return path


def check_pcluster(cfg: config_mod.RunConfig, project: Project, run_id: str, airflow_run_id: str) -> None:
    """Every check of an ephemeral cluster before it exists: settings, then ``pcluster --dryrun``.

    The dry run runs all of pcluster's own validators against the account (instance types,
    subnet, AMI, key pair, bucket) and creates nothing. ``SCIOPS_PCLUSTER_SUPPRESS`` lists
    validators to skip (comma-separated; the tests' moto endpoint cannot satisfy some).
    """
    import os

    from sciops.clusters import parallelcluster as pc
    from sciops.errors import ClusterError

    settings = pcluster_settings(cfg, project.name, airflow_run_id)
    problems = pc.head_connection_problems(cfg.ssh_conn_id)
    if problems:
        raise ConfigError([("ssh_conn_id", p) for p in problems])
    path = write_cluster_config(project.run_dir(run_id), settings)
    suppress = tuple(v for v in os.environ.get("SCIOPS_PCLUSTER_SUPPRESS", "").split(",") if v)
    try:
        problems = pc.PCluster(settings.region, env=pc.aws_env(cfg.aws_conn_id)).dryrun(
            pc.cluster_name(airflow_run_id), str(path), suppress)
    except ClusterError as exc:
        raise ConfigError([("backend", str(exc))]) from None
    if problems:
        raise ConfigError([("cluster", "pcluster's validators refused the cluster: " + "; ".join(problems)[:3000])])
    log.info("pcluster dry run passed for %s (%s)", pc.cluster_name(airflow_run_id), path)


def open_project(name: Any, storage=None) -> tuple[Project, dict[str, Any] | None]:
    """The project under the storage root, or a ConfigError that says what exists.

    On S3 this lists the project once, fetches ``project.yaml`` and ``src/`` into the run's
    working copy (a few small files) and returns that listing (relative path → size and
    ETag); the images themselves are staged in later. On a local root the second value is ``None``.
    """
    from sciops.sync import LocalTree, sync

    if not isinstance(name, str):
        raise ConfigError([("project", f"must be a folder name (text), got {type(name).__name__} {name!r}"
                                       if name is not None else "is required: the name of a project folder under "
                                       "the storage root")])
    if not config_mod.SAFE_NAME.match(name):
        config_mod.build({"project": name})  # raises with the rule
    storage = storage or get_storage()
    if storage.is_local:
        try:
            storage.check()
            root = storage.path(name)
        except StorageError as exc:
            raise ConfigError([("project", str(exc))]) from None
        if not root.is_dir():
            raise ConfigError([("project", f"no project folder {name!r} under {storage.root}; existing projects: "
                                           f"{', '.join(storage.projects()[:20]) or 'none'}. Sync the project up "
                                           "first or fix the name")])
        return Project(name, root), None
    storage.check()  # ConfigError naming storage_root / aws_conn_id
    listing = storage.tree(name).list(include=PROJECT_PARTS)  # not output/: past runs can hold millions of files
    if not listing:
        raise ConfigError([("project", f"no project {name!r} in {storage.url}; existing projects: "
                                       f"{', '.join(storage.projects()[:20]) or 'none'}. Sync the project up first "
                                       "(sync_from, or python -m sciops sync-up) or fix the name")])
    workspace = storage.workspace(name)
    workspace.mkdir(parents=True, exist_ok=True)
    sync(storage.tree(name), LocalTree(workspace), include=["project.yaml", "src"], delete=True,
         label=f"fetch project.yaml and src/ of {name}", source=listing)
    return Project(name, workspace), listing


def check(conf: dict[str, Any]) -> tuple[config_mod.RunConfig, Project, list[str], Path]:
    """Every check that needs no ImageJ: config, project, input, macro. Raises ConfigError."""
    return _check(conf, storage_of(conf))[:4]


def _check(conf: dict[str, Any], storage):
    """:func:`check`, plus the project's S3 listing (None on a local root) and its project.yaml, for validate."""
    project, listing = open_project(conf.get("project"), storage)
    inputs = None if listing is None else [rel[len("input/"):] for rel in listing if rel.startswith("input/")]
    defaults = project.defaults()
    cfg = config_mod.build(conf, defaults)
    if inputs is None and not project.input_dir.is_dir() or inputs == []:
        raise ConfigError([("project", f"project {project.name!r} has no input/ folder; put the images in "
                                       f"{project.input_dir if inputs is None else 'its input/ prefix'}")])
    images = project.list_images(cfg.patterns) if inputs is None else match_images(inputs, cfg.patterns)
    if not images:
        raise ConfigError([("file_pattern", f"no file in {project.name}/input matches {cfg.file_pattern!r}; "
                                            "add images or change the pattern (e.g. '*.tif,*.png')")])
    unsafe = [rel for rel in images if any(c in rel for c in "\t\n\r\x00")]
    if unsafe:  # the job file is one image per line, tab-separated: such a name would split it
        raise ConfigError([("project", f"{len(unsafe)} image name(s) hold a tab or a line break, e.g. "
                                       f"input/{unsafe[0]!r}; rename them (or narrow file_pattern)")])
    macro = project.resolve_macro(cfg.macro)
    if cfg.sync_to:
        check_lan_folder(cfg.sync_to)
    return cfg, project, images, macro, listing, defaults


def check_lan_folder(folder: str) -> None:
    """``sync_to`` must be a folder this worker can write (or create), found out before the run, not after."""
    import os

    path = Path(folder)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError([("sync_to", f"{folder} cannot be written by this worker ({existing} is not a writable "
                                       "folder); give a LAN folder mounted read-write here")])


REFUSED = "refused"


@contextmanager
def refusals(conf: dict[str, Any], airflow_run_id: str, dag_id: str | None = None,
             trigger: str | None = None) -> Iterator[None]:
    """A :class:`ConfigError` raised inside becomes a ledger row (status ``refused``, the reason), then re-raised.

    That is how a run refused before it has a run folder (bad parameter, missing project,
    budget) still shows on the dashboard; ``record`` writes the row of one refused later
    (the smoke run). Nothing was spent, so there is no cost and no report.
    """
    started = time.time()
    try:
        yield
    except ConfigError as exc:
        from sciops import ledger

        project = conf.get("project")
        doc = {"run_id": safe_run_id(airflow_run_id), "airflow_run_id": airflow_run_id, "dag_id": dag_id,
               "trigger": TRIGGERS.get(trigger, trigger), "status": REFUSED, "reason": str(exc),
               "project": project if isinstance(project, str) else repr(project),
               "macro": {"name": conf.get("macro") if isinstance(conf.get("macro"), str) else None},
               "params": config_mod.merge(conf),  # project.yaml's values may not have been read
               "started_at": started, "ended_at": time.time(),
               "phases": {"validate": {"status": "failed", "start": started, "end": time.time(),
                                       "error": str(exc)}}}
        try:
            ledger.write(doc)
            log.info("refused run %s recorded in the ledger", doc["run_id"])
        except Exception as lexc:  # noqa: BLE001 - the refusal itself is what the user must see
            log.error("the refused run could not be written to the ledger (%s: %s)", type(lexc).__name__, lexc)
        raise


def validate(conf: dict[str, Any], airflow_run_id: str,
             publish: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check everything before anything is spent; returns what later tasks need (an XCom).

    ``publish`` receives the run info as soon as the run folder exists, before the smoke
    run, so that ``record`` can write ``run.json`` even when the smoke run fails.
    """
    started = time.time()
    storage = storage_of(conf)
    cfg, project, images, macro, listing, defaults = _check(conf, storage)
    chosen = {k: v for k, v in config_mod.sources(conf, defaults).items() if v != "default"}
    log.info("parameters set by the run or project.yaml (the rest are built-in defaults): %s",
             ", ".join(f"{k}={getattr(cfg, k)!r} ({v})" for k, v in chosen.items()) or "none")
    # cheap before slow: settings and the budget estimate need nothing remote; the cluster checks reach out
    if cfg.backend == "parallelcluster":
        pcluster_settings(cfg, project.name, airflow_run_id)
    estimate = check_budget(cfg, project.name, len(images), sha256(macro))
    if cfg.backend == "local":
        launcher = smoke_launcher = require_launcher(cfg.launcher)
    elif cfg.backend == "parallelcluster":
        check_pcluster(cfg, project, safe_run_id(airflow_run_id), airflow_run_id)
        launcher = {"kind": None, "note": "probed on the head node once the cluster exists (plan)"}
        smoke_launcher = detect_launcher(cfg.launcher)
    else:
        launcher = check_cluster(cfg, project)
        # Smoke-run here when this worker has ImageJ too; else the first task on the cluster is the test.
        smoke_launcher = detect_launcher(cfg.launcher)
    run_id = safe_run_id(airflow_run_id)
    run_dir = project.run_dir(run_id)
    try:
        (run_dir / PHASES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([("project", f"cannot create the run folder {run_dir} ({exc.strerror}); make "
                                       f"{project.name}/output/ writable by the worker")]) from None
    info = {"run_id": run_id, "airflow_run_id": airflow_run_id, "project": project.name,
            "project_root": str(project.root), "run_dir": str(run_dir), "config": cfg.model_dump(),
            "config_sources": chosen,
            "images": len(images), "macro_path": str(macro), "macro_sha256": sha256(macro), "launcher": launcher,
            "imagej_version": None, "estimate": estimate}
    with phase(run_dir, "validate", start=started):
        if publish:
            publish(info)
        if cfg.smoke_test and smoke_launcher:
            if listing is not None:  # the smoke images only; the rest is staged in later
                from sciops.sync import LocalTree, sync

                sync(storage.tree(project.name), LocalTree(project.root), source=listing,
                     include=[f"input/{rel}" for rel in images[:SMOKE_FETCH]], label="fetch smoke-test images")
            job = stage_job_files(run_dir / "work", macro)
            manifest = dict(_manifest(info, cfg, project, job, chunks=[], expected=expected_outputs(macro)),
                            launcher=smoke_launcher, input_dir=str(project.input_dir), macro_path=str(job["macro"]),
                            driver_path=str(job["driver"]))
            summary = smoke_run(manifest, smoke_candidates(project.input_dir, images, cfg.memory_mb))
            info["imagej_version"] = summary.get("imagej_version")
        elif cfg.smoke_test:
            log.info("no ImageJ on this worker: the macro is first tried by the cluster's tasks")
    log.info("run %s of project %s: %d image(s), macro %s (sha256 %s), ImageJ %s", run_id, project.name,
             len(images), cfg.macro, info["macro_sha256"][:12], info["imagej_version"] or "not smoke-tested")
    return info


def _manifest(info: dict[str, Any], cfg: config_mod.RunConfig, project: Project, job: dict[str, Path],
              chunks: list[list[str]], expected: list[str]) -> dict[str, Any]:
    run_dir = Path(info["run_dir"])
    on_cluster = lambda p: cluster_path(p, cfg)  # noqa: E731 - the paths the task runner will use
    return {
        "run_id": info["run_id"], "project": project.name, "run_dir": on_cluster(run_dir),
        "work_dir": on_cluster(run_dir / "work"), "input_dir": on_cluster(project.input_dir),
        "macro_path": on_cluster(job["macro"]), "driver_path": on_cluster(job["driver"]),
        "macro_args": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.macro_args.items()},
        "expected_outputs": expected, "chunks": chunks, "memory_mb": cfg.memory_mb,
        "image_timeout_s": cfg.image_timeout_s, "stall_seconds": cfg.stall_seconds,
        "max_attempts": cfg.max_attempts, "backend": cfg.backend, "backend_options": backend_options(cfg),
        "launcher": info["launcher"],
    }


def _images(cfg: config_mod.RunConfig, project: Project) -> list[str]:
    """The run's images: from the storage root's listing on S3 (the working copy may be on the cluster only)."""
    storage = storage_of(cfg)
    if storage.is_local:
        return project.list_images(cfg.patterns)
    listing = storage.tree(project.name, "input").list()
    return match_images(list(listing), cfg.patterns)


def plan(info: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """List the images, cut them into chunks, write the manifest and the job files.

    On a cluster that does not share this worker's files (parallelcluster), the run folder
    is then sent to the head node through the bucket.
    """
    cfg = config_mod.RunConfig(**info["config"])
    run_dir = Path(info["run_dir"])
    with phase(run_dir, "plan"):
        project = Project(info["project"], Path(info["project_root"]))
        images = _images(cfg, project)
        macro = Path(info["macro_path"])
        work = run_dir / "work"
        job = stage_job_files(work, macro)
        if sha256(job["macro"]) != info["macro_sha256"]:
            raise SciOpsError(f"macro {macro} changed between validate and plan; trigger the run again")
        chunks = chunk(images, cfg.images_per_task)
        # The scheduler writes task logs here and the runners their statuses: both must exist
        # before submission (SGE leaves a task in Eqw forever when its -o folder is missing).
        dirs = (run_dir / "logs", work / "status", work / "images")
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            if cfg.backend != "local":
                # Jobs run as the cluster user, who shares a group with Airflow's: let the group write.
                d.chmod(0o2775)
        if cfg.backend == "parallelcluster":
            if not (cluster or {}).get("head_node_ip"):
                raise SciOpsError("no head node address: create_cluster did not run or did not succeed")
            info = dict(info, launcher=_probe_launcher(cfg, cluster))
        manifest = dict(_manifest(info, cfg, project, job, chunks, expected_outputs(macro)),
                        backend_options=backend_options(cfg, cluster), budget=budget_rates(cfg, run_dir),
                        plan_id=uuid.uuid4().hex[:8])  # in the job names: see arrays.job_name
        path = write_json(work / "manifest.json", manifest)
        if not shares_files(cfg):
            _send_run_folder(cfg, info, cluster, [cluster_path(d, cfg) for d in dirs])
    log.info("planned %d image(s) in %d task(s) of up to %d", len(images), len(chunks), cfg.images_per_task)
    return {"manifest": str(path), "tasks": len(chunks), "images": len(images)}


def budget_rates(cfg: config_mod.RunConfig, run_dir: Path) -> dict[str, float] | None:
    """What the array watcher needs to follow the spend: the cap, the rates, what is spent already."""
    if not cfg.budget_usd:
        return None
    if cfg.backend != "parallelcluster":
        return {"budget_usd": cfg.budget_usd, "spent_usd": 0.0, "task_rate_usd_per_hour": cfg.hourly_rate_usd,
                "fixed_rate_usd_per_hour": 0.0}
    from sciops import costs
    from sciops.clusters.parallelcluster import with_defaults

    c = with_defaults(cfg.cluster.given())
    prices = costs.load_prices()
    region, itype = c["region"], c["compute_instance_type"]
    head = costs.on_demand_price(prices, region, c["head_node_instance_type"])
    node = costs.on_demand_price(prices, region, itype)
    created = _phase_path(run_dir, "cluster_create")
    since = json.loads(created.read_text())["start"] if created.exists() else time.time()
    fixed = head + c["min_count"] * node
    return {"budget_usd": cfg.budget_usd, "spent_usd": fixed * (time.time() - since) / 3600,
            "task_rate_usd_per_hour": node / costs.tasks_per_node(itype, cfg.memory_mb),
            "fixed_rate_usd_per_hour": fixed}


def _probe_launcher(cfg: config_mod.RunConfig, cluster: dict[str, Any] | None) -> dict[str, Any]:
    from sciops.clusters import get_backend
    from sciops.errors import ClusterError

    backend = get_backend(cfg.backend, **backend_options(cfg, cluster))
    try:
        return backend.launcher(cfg.launcher, backend.probe())
    except ClusterError as exc:
        raise SciOpsError(f"the new cluster's head node is not usable: {exc}") from None
    finally:
        backend.close()


def _send_run_folder(cfg, info, cluster, cluster_dirs: list[str]) -> None:
    """Worker → bucket → head node: the manifest and job files of a run, on a cluster without our files."""
    from sciops import sync as sync_mod

    storage = storage_of(cfg)
    # work/phases/ is the worker's own bookkeeping: it never goes to the cluster and back (a
    # copy taken mid-phase would come back saying "running")
    sync_mod.stage_out(storage, info["project"], info["run_id"], info["run_dir"], exclude=[PHASES])
    where = cluster_path(info["run_dir"], cfg)
    _head_node(cfg, cluster, ["mkdir", "-p", *cluster_dirs])
    _head_node_aws(cfg, storage, ["s3", "sync", storage.uri(info["project"], "output", info["run_id"]) + "/",
                                  where + "/"], cluster)


def _fetch_run_folder(cfg, info, cluster) -> None:
    """Head node → bucket → worker: everything the tasks wrote, before collating."""
    from sciops import sync as sync_mod

    storage = storage_of(cfg)
    _head_node_aws(cfg, storage, ["s3", "sync", cluster_path(info["run_dir"], cfg) + "/",
                                  storage.uri(info["project"], "output", info["run_id"]) + "/"], cluster)
    _stats(sync_mod.sync(storage.tree(info["project"], "output", info["run_id"]),
                         sync_mod.LocalTree(info["run_dir"]), exclude=[PHASES], label=f"fetch {info['run_id']}"))


def collate(info: dict[str, Any], manifest_path: str, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    from sciops.results import collate as collate_results

    cfg = config_mod.RunConfig(**info["config"])
    run_dir = Path(info["run_dir"])
    with phase(run_dir, "collate"):
        if not shares_files(cfg):
            _fetch_run_folder(cfg, info, cluster)
        return collate_results(run_dir, read_manifest(manifest_path)).as_dict()


def _imagej_version(work: Path, info: dict[str, Any]) -> str | None:
    for path in sorted(work.glob("status/task-*.attempt-*.json")):
        version = json.loads(path.read_text()).get("imagej_version")
        if version:
            return version
    return info.get("imagej_version")


def _head_node(cfg: config_mod.RunConfig, cluster: dict[str, Any] | None, argv: list[str]) -> None:
    """Run argv on the head node (quoted by the runner)."""
    from sciops.clusters import get_backend

    backend = get_backend(cfg.backend, **backend_options(cfg, cluster))
    try:
        backend.runner().run(argv)
    finally:
        backend.close()


def _head_node_aws(cfg: config_mod.RunConfig, storage, argv: list[str], cluster: dict[str, Any] | None = None) -> None:
    """Run ``aws <argv>`` on the head node (credentials: its own environment or instance role)."""
    extra = ["--only-show-errors", "--no-progress", "--region", storage.region]
    if storage.endpoint_url:
        extra += ["--endpoint-url", storage.endpoint_url]
    _head_node(cfg, cluster, ["aws", *argv, *extra])


def _stats(stats) -> dict[str, Any]:
    d = stats.as_dict()
    log.info("%s: %d file(s) transferred (%d bytes), %d unchanged, %.1f s", d["direction"], d["transferred"],
             d["bytes"], d["skipped"], d["seconds"])
    return d


def sync_up(conf: dict[str, Any]) -> dict[str, Any] | None:
    """The LAN project folder (``sync_from``) → the storage root. ``None``: nothing to do."""
    from sciops import sync as sync_mod

    if not conf.get("sync_from"):
        return None
    folder = Path(conf["sync_from"])
    lan = Project(str(conf.get("project") or ""), folder)
    config_mod.build(conf, lan.defaults() if folder.is_dir() else {})  # bad input fails before any transfer
    if not (folder / "input").is_dir():
        raise ConfigError([("sync_from", f"{folder} is not a project folder on this worker (no input/ in it); give "
                                         "the LAN folder that holds input/, src/ and project.yaml")])
    storage = storage_of(conf)
    storage.check()
    start = time.time()
    stats = _stats(sync_mod.sync_up(storage, folder, conf["project"], verify=True))  # a run checks the bucket
    return dict(stats, phase="sync_up", start=start, end=time.time(), status="success")


def stage_in(info: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The project (``input/ src/ bin/ project.yaml``) → the run's working copy. ``None`` on a local root."""
    from sciops import sync as sync_mod

    cfg = config_mod.RunConfig(**info["config"])
    storage = storage_of(cfg)
    if storage.is_local:
        return None
    root = Path(info["project_root"])
    with phase(info["run_dir"], "stage_in"):
        if cfg.backend == "local":
            return _stats(sync_mod.stage_in(storage, info["project"], root))
        start = time.time()
        _head_node_aws(cfg, storage, ["s3", "sync", storage.uri(info["project"]) + "/", cluster_path(root, cfg) + "/",
                                      "--exclude", "*", "--include", "input/*", "--include", "src/*",
                                      "--include", "bin/*", "--include", "project.yaml"], cluster)
        return {"direction": "down", "by": "head node (aws s3 sync)", "seconds": round(time.time() - start, 3)}


def stage_out(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run folder → ``<project>/output/<run_id>/`` in the storage root. ``None`` on a local root."""
    from sciops import sync as sync_mod

    if not info:
        return None
    cfg = config_mod.RunConfig(**info["config"])
    storage = storage_of(cfg)
    run_dir = Path(info["run_dir"])
    if storage.is_local or not run_dir.is_dir():
        return None
    with phase(run_dir, "stage_out"):
        if cfg.backend == "local" or not shares_files(cfg):  # the worker holds the whole run folder
            return _stats(sync_mod.stage_out(storage, info["project"], info["run_id"], run_dir))
        start = time.time()
        _head_node_aws(cfg, storage, ["s3", "sync", cluster_path(run_dir, cfg) + "/",
                                      storage.uri(info["project"], "output", info["run_id"]) + "/"])
        return {"direction": "up", "by": "head node (aws s3 sync)", "seconds": round(time.time() - start, 3)}


#: What a run that collated must have in the LAN folder after sync_down (the tables collate always writes).
COLLATED_TABLES = ("results.csv", "summary.csv", "failures.csv")


def sync_down(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """``output/<run_id>/`` → the LAN folder (``sync_to``, else ``sync_from``). ``None``: not asked for.

    A sync that "succeeds" with the results missing (the bucket lost them: an endpoint restarted
    between stage_out and here, a lifecycle rule) fails, naming what is missing: a run never
    ends ``success`` unless its tables are where the user will look.
    """
    from sciops import sync as sync_mod

    if not info:
        return None
    cfg = config_mod.RunConfig(**info["config"])
    target = cfg.sync_to or cfg.sync_from
    if not target:
        return None
    with phase(info["run_dir"], "sync_down"):
        storage = storage_of(cfg)
        stats = _stats(sync_mod.sync_down(storage, info["project"], info["run_id"], target))
        collated = Path(info["run_dir"], PHASES, "collate.json")
        if collated.exists() and json.loads(collated.read_text()).get("status") == "success":
            dest = Path(target, "output", info["run_id"])
            missing = [name for name in COLLATED_TABLES if not (dest / name).is_file()]
            if missing:
                raise SciOpsError(
                    f"sync_down ended with {', '.join(missing)} missing from {dest}: the storage root does not hold "
                    f"them ({storage.url}/{info['project']}/output/{info['run_id']}/, {stats.get('transferred', 0)} "
                    "file(s) copied). Clear stage_out and sync_down in the UI to push and fetch them again.")
        return stats


BUDGET_EXCEEDED = "budget exceeded"
#: Airflow's run types as a lab says them.
TRIGGERS = {"manual": "UI/API", "scheduled": "nightly", "asset_triggered": "new data", "backfill": "backfill"}


def array_timing(attempts: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    """Per submission: queue wait (submit → first task start) and compute (first start → last end)."""
    from sciops.costs import task_intervals

    tasks = task_intervals(work)
    out = []
    for n, att in enumerate(attempts, 1):
        mine = [t for t in tasks if t["attempt"] == n]
        first = min((t["start"] for t in mine), default=None)
        last = max((t["end"] for t in mine), default=None)
        out.append({"attempt": n, "job_id": att["job_id"], "tasks": len(att.get("task_ids") or mine),
                    "queue_wait_s": round(first - att["submitted_at"], 3) if first and att.get("submitted_at") else None,
                    "compute_s": round(last - first, 3) if first and last else None, "resubmit": n > 1})
    return out


def run_cost(cfg: config_mod.RunConfig, info: dict[str, Any], work: Path) -> dict[str, Any]:
    """Node-hours and USD: EC2 instance lives for parallelcluster, task-hours × rate otherwise."""
    from sciops import costs

    if cfg.backend != "parallelcluster":
        return costs.rate_cost(work, cfg.hourly_rate_usd)
    try:
        from sciops.clusters import parallelcluster as pc

        settings = pcluster_settings(cfg, info["project"], info["airflow_run_id"])
        ec2 = ec2_client(cfg.aws_conn_id, settings.region)
        out = costs.pcluster_cost(ec2, pc.cluster_name(info["airflow_run_id"]), settings.region, costs.load_prices(),
                                  volume_gb=settings.shared_storage_gb + settings.root_volume_gb)
        out["cross_check"] = costs.rate_cost(work, 0.0)["node_hours"]  # what the tasks themselves used
        return out
    except Exception as exc:  # noqa: BLE001 - a cost we cannot read is reported, not fatal
        log.warning("cost of the cluster could not be read from EC2 (%s: %s)", type(exc).__name__, exc)
        return {"kind": "ec2", "node_hours": {}, "compute_usd": 0.0, "storage_usd": 0.0, "total_usd": 0.0,
                "error": f"{type(exc).__name__}: {exc}"[:500]}


def ec2_client(conn_id: str | None, region: str):
    import boto3

    from sciops.storage import connection_credentials

    creds, _, endpoint = connection_credentials(conn_id or "aws_default")
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)


def record(info: dict[str, Any] | None, collated: dict[str, Any] | None = None, dag_id: str | None = None,
           trigger: str | None = None, synced_up: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``run.json`` for every run that got past the project check, failed or not.

    On S3 it is also put in ``<project>/output/<run_id>/``, and copied to the LAN folder
    when results are synced down. Records failed runs as well as good ones and does not
    fail for them: :func:`outcome` (the DAG's last task) does.
    """
    if not info:
        raise SciOpsError("validate did not pass: nothing was run and there is no run folder to record in "
                          "(see the sync_up and validate tasks' logs for the field to fix)")
    run_dir = Path(info["run_dir"])
    work = run_dir / "work"
    phases = {"sync_up": synced_up} if synced_up else {}
    for path in sorted(work.glob("phases/*.json")):
        rec = json.loads(path.read_text())
        phases[rec["phase"]] = rec
    for rec in phases.values():
        if rec.get("end"):
            rec["seconds"] = round(rec["end"] - rec["start"], 3)
    failed_phases = [name for name, rec in phases.items() if rec["status"] != "success"]
    collated = collated or {}
    attempts = json.loads((work / "attempts.json").read_text()) if (work / "attempts.json").exists() else []
    cpu_seconds = sum(a.get("seconds") or 0 for att in attempts for a in att["accounting"].values())
    starts = [p["start"] for p in phases.values()]
    ends = [p.get("end") or time.time() for p in phases.values()]
    cfg = config_mod.RunConfig(**info["config"])
    storage = storage_of(cfg)
    status = "failed" if failed_phases else "success"
    if any(BUDGET_EXCEEDED in (phases[p].get("error") or "") for p in failed_phases):
        status = BUDGET_EXCEEDED
    elif failed_phases == ["validate"]:  # the smoke run said no: nothing was spent
        status = REFUSED
    cost = run_cost(cfg, info, work)
    ok = collated.get("ok")
    doc = {
        "run_id": info["run_id"], "airflow_run_id": info["airflow_run_id"], "dag_id": dag_id,
        "trigger": TRIGGERS.get(trigger, trigger), "project": info["project"], "params": info["config"],
        "storage_root": storage.url, "run_dir": str(run_dir),
        "macro": {"name": info["config"]["macro"], "sha256": info["macro_sha256"]},
        "imagej_version": _imagej_version(work, info), "launcher": info["launcher"].get("kind"),
        "status": status, "failed_phases": failed_phases,
        "reason": next((phases[p].get("error") for p in failed_phases if phases[p].get("error")), None),
        "param_sources": info.get("config_sources"),
        "started_at": min(starts) if starts else None, "ended_at": max(ends) if ends else None,
        "phases": phases,
        "images": {"total": info["images"], "ok": ok, "failed": collated.get("failed")},
        "array": {"attempts": len(attempts), "job_ids": [a["job_id"] for a in attempts],
                  "task_seconds": round(cpu_seconds, 3), "timing": array_timing(attempts, work)},
        "cost": cost, "cost_per_image_usd": round(cost["total_usd"] / ok, 6) if ok else None,
        "budget": {"budget_usd": cfg.budget_usd, "estimate": info.get("estimate"),
                   "abort": json.loads((work / "budget.json").read_text()) if (work / "budget.json").exists()
                   else None},
        "files": collated.get("files", {}),
    }
    from sciops import ledger, notify, report

    doc["report"] = str(run_dir / "report.html")
    path = write_json(run_dir / "run.json", doc)
    report.write(run_dir, doc)
    log.info("run.json and report.html written: %s", run_dir)
    try:
        ledger.write(doc)
    except Exception as exc:  # noqa: BLE001 - the run's own files hold everything; say so loudly
        log.error("the run ledger could not be written (%s: %s); run.json has the row", type(exc).__name__, exc)
        failed_phases = failed_phases + ["ledger"]
    if not storage.is_local:
        for name in ("run.json", "report.html"):
            log.info("stored: %s", storage.put_run_file(info["project"], info["run_id"], name,
                                                       (run_dir / name).read_bytes()))
    lan = cfg.sync_to or cfg.sync_from
    if lan:
        write_json(Path(lan, "output", info["run_id"], "run.json"), doc)
        Path(lan, "output", info["run_id"], "report.html").write_bytes((run_dir / "report.html").read_bytes())
    notify.run_ended(doc)
    doc["failed_phases"] = failed_phases
    return doc


def outcome(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The run's verdict from what ``record`` wrote: raises when a phase failed (the DAG run then fails)."""
    if not recorded:
        raise SciOpsError("the run was not recorded (record failed: see its log, and validate's for the field "
                          "to fix)")
    failed = recorded.get("failed_phases") or []
    if failed:
        phases = recorded.get("phases") or {}
        raise SciOpsError(f"run {recorded['run_id']} failed in {', '.join(failed)}: "
                          + "; ".join(phases.get(p, {}).get("error") or f"{p} did not finish (see its log)"
                                      for p in failed)[:2000])
    return {"run_id": recorded["run_id"], "status": recorded["status"], "images": recorded["images"]}


def summary_table(run_dir: Path | str, limit: int = 20) -> str:
    """A short text table of ``summary.csv`` (for the demo and the record log)."""
    import pandas as pd

    path = Path(run_dir, "summary.csv")
    df = pd.read_csv(path)
    if "count" in df.columns:
        df["count"] = df["count"].astype("Int64")
    cols = [c for c in ("image", "count", "mean_area", "mean_intensity", "seconds") if c in df.columns]
    return df[cols].head(limit).to_string(index=False)
