"""``validate``: every check before anything is spent, and the run record it makes.

Cheap before slow: the config and the project (:func:`check`), the backend's settings and
the budget estimate need nothing remote; then the backend's own checks reach out (the head
node over SSH, pcluster's dry run); then the smoke run. A problem is a :class:`ConfigError`
naming the field and the fix; :func:`refusals` turns one into a ledger row.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sciops_node import contract
from sciops_node.units import PLACEHOLDER
from sciops.accounting import ledger
from sciops.errors import ConfigError, StorageError
from sciops.imaging import bioformats
from sciops.imaging.bioformats import needs_bioformats, unit_parts
from sciops.imaging.imagej import image_problem, smoke_candidates, smoke_run
from sciops.imaging.macros import MacroProblem, dialog_calls, missing_params
from sciops.phases import PHASES, REFUSED, phase, trigger_label
from sciops.phases.plan import manifest_of
from sciops.run import config as config_mod, processed
from sciops.run.bounded import brief, control_chars
from sciops.run.project import (MACRO_DIR, Project, claim_run_dir, expected_outputs, macro_sha256, match_images,
                                safe_run_id, stage_job_files, used_macros, write_json)
from sciops.run.runinfo import RunInfo, backend_for, storage_for
from sciops.storage.root import PROJECT_PARTS, get_storage
from sciops.storage.sync import LocalTree, sync

log = logging.getLogger(__name__)
#: Images fetched from S3 for the smoke run (it needs a few non-empty ones).
SMOKE_FETCH = 6


def open_project(name: Any, storage=None) -> tuple[Project, dict[str, Any] | None]:
    """The project under the storage root, or a ConfigError that says what exists.

    On S3 this lists the project once, fetches ``project.yaml`` and ``src/`` into the run's
    working copy (a few small files) and returns that listing (relative path → size and
    ETag); the images themselves are staged in later. On a local root the second value is ``None``.
    """
    if not isinstance(name, str):
        raise ConfigError([("project", f"must be a folder name (text), got {type(name).__name__} {brief(name)}"
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
    tree = storage.tree(name)
    listing = tree.list(include=PROJECT_PARTS)  # not output/: past runs can hold millions of files
    if tree.unsafe:   # put there by another tool: refused, named (sync up never makes such a key)
        key, why = next(iter(tree.unsafe.items()))
        raise ConfigError([("project", f"{len(tree.unsafe)} object(s) of project {name!r} have a key that is no file "
                                       f"path, e.g. {brief(key)} ({why}); delete or rename them in the bucket")])
    if not listing:
        raise ConfigError([("project", f"no project {name!r} in {storage.url}; existing projects: "
                                       f"{', '.join(storage.projects()[:20]) or 'none'}. Sync the project up first "
                                       "(sync_from, or sciops sync up FOLDER) or fix the name")])
    workspace = storage.workspace(name)
    workspace.mkdir(parents=True, exist_ok=True)
    sync(storage.tree(name), LocalTree(workspace), include=["project.yaml", "src"], delete=True,
         label=f"fetch project.yaml and src/ of {name}", source=listing)
    return Project(name, workspace), listing


def check(conf: dict[str, Any]) -> tuple[config_mod.RunConfig, Project, list[str], Path]:
    """Every check that needs no ImageJ: config, project, input, macro. Raises ConfigError."""
    return check_project(conf, storage_for(conf))[:4]


def check_project(conf: dict[str, Any], storage):
    """:func:`check`, plus the project's S3 listing (None on a local root), its project.yaml, and the content
    ids of input/ (one listing: S3's, or one walk of the folder; plan and nightly list nothing again)."""
    project, listing = open_project(conf.get("project"), storage)
    inputs = None if listing is None else [rel[len("input/"):] for rel in listing if rel.startswith("input/")]
    defaults = project.defaults()
    cfg = config_mod.build(conf, defaults)
    if inputs is None and not project.input_dir.is_dir() or inputs == []:
        raise ConfigError([("project", f"project {project.name!r} has no input/ folder; put the images in "
                                       f"{project.input_dir if inputs is None else 'its input/ prefix'}")])
    if inputs is None:
        project.check_inside(project.input_dir, "project", "put the images (or a folder of them) in input/ itself")
    try:
        ids = processed.content_ids(storage, project.name, listing)
    except StorageError as exc:   # e.g. input/ nested deeper than a walk goes (sciops.storage.trees.local)
        raise ConfigError([("project", str(exc))]) from None
    images = match_images(list(ids), cfg.patterns)
    if not images:
        raise ConfigError([("file_pattern", f"no file in {project.name}/input matches {brief(cfg.file_pattern)}; "
                                            "add images or change the pattern (e.g. '*.tif,*.png')")])
    unsafe = [rel for rel in images if control_chars(rel)]
    if unsafe:  # the job file is one image per line, tab-separated: such a name would split it
        kind = ("a tab" if "\t" in unsafe[0] else "a line break" if any(c in unsafe[0] for c in "\n\r\u2028\u2029")
                else "a control character")
        raise ConfigError([("project", f"{len(unsafe)} image name(s) hold {kind} or another control character "
                                       f"({', '.join(control_chars(unsafe[0]))}), e.g. input/{brief(unsafe[0])}; "
                                       "rename them (or narrow file_pattern)")])
    check_template_names(cfg, images)
    # "]" would end the Bio-Formats Importer's open=[...] option; "x#3" reads as series 3 of x
    odd = [rel for rel in images if ("]" in rel and needs_bioformats(rel)) or unit_parts(rel)[1] is not None]
    if odd:
        raise ConfigError([("project", f"{len(odd)} file name(s) SciOps cannot tell from a series, e.g. "
                                       f"input/{odd[0]!r}: rename them without ']' and without a '#<number>' ending "
                                       "(or narrow file_pattern)")])
    macro = project.resolve_macro(cfg.macro)
    check_headless(macro, cfg, project)
    if cfg.only_new:
        images = only_new(storage, project.name, images, macro_sha256(macro), cfg.macro_args, ids)
    if cfg.sync_to:
        check_lan_folder(cfg.sync_to)
    for field in ("sync_to", "sync_from"):
        if getattr(cfg, field):
            check_outside_projects(getattr(cfg, field), field, storage)
    return cfg, project, images, macro, listing, defaults, ids


#: Characters a lab macro may split its ``macro_argument`` string at.
TEMPLATE_SEPARATORS = ",; |=:"


def check_template_names(cfg: config_mod.RunConfig, images: list[str]) -> None:
    """With a ``macro_argument`` template, an image name holding one of the template's own separators (the
    ``,`` of ``'{input},{output},5'``) would shift what the macro reads: refused on ``macro_argument``."""
    if not cfg.macro_argument:
        return
    literal = PLACEHOLDER.sub("", cfg.macro_argument)
    seps = [c for c in TEMPLATE_SEPARATORS if c in literal]
    clash = [rel for rel in images if any(c in rel for c in seps)]
    if clash:
        found = sorted({c for c in seps if any(c in rel for rel in clash)})
        raise ConfigError([("macro_argument", f"{len(clash)} image name(s) hold {' '.join(repr(c) for c in found)}, "
                                              f"which the template {brief(cfg.macro_argument)} also separates its "
                                              f"parts with, e.g. input/{brief(clash[0])}: the macro would split the "
                                              "name. Rename them, or choose a separator no name holds")])


def check_headless(macro: Path, cfg: config_mod.RunConfig, project: Project) -> None:
    """Refuse a macro that would wait for a person (a dialog) or whose ``#@`` parameters SciOps cannot give."""
    used_macros(macro)
    text = macro.read_text(encoding="utf-8", errors="replace")
    shown = macro.name if macro.parent == MACRO_DIR else macro.relative_to(project.root.resolve()).as_posix()
    try:
        problems = dialog_calls(text) + missing_params(text, set(cfg.macro_args))
    except MacroProblem as exc:
        problems = exc.problems
    if problems:
        raise ConfigError([("macro", f"{shown} line {line}: {message}") for line, message in sorted(problems)[:20]])


def only_new(storage, project: str, images: list[str], macro_sha: str, macro_args: dict[str, Any],
             ids: dict[str, str]) -> list[str]:
    """The images this macro with these arguments has not processed as they are now (``ids``: the content
    ids of input/, :func:`sciops.run.processed.content_ids`); ConfigError when none."""
    new = processed.new_images(images, ids,
                               processed.read(storage, project, processed.key(macro_sha, macro_args)))
    if not new:
        raise ConfigError([("only_new", f"all {len(images)} image(s) matching file_pattern were processed by this "
                                        "macro with these macro_args already, and none changed since: nothing to "
                                        "do. Add images, or set only_new to false to process them again")])
    log.info("only_new: %d of %d image(s) are new or changed since this macro processed them", len(new),
             len(images))
    return new


def check_lan_folder(folder: str) -> None:
    """``sync_to`` must be a folder this worker can write (or create), found out before the run, not after."""
    path = Path(folder)

    def exists(p: Path) -> bool:
        try:
            return p.exists()
        except OSError:   # a name longer than the filesystem takes: not there
            return False

    existing = next((p for p in (path, *path.parents) if exists(p)), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError([("sync_to", f"{folder} cannot be written by this worker ({existing} is not a writable "
                                       "folder); give a LAN folder mounted read-write here")])


def check_outside_projects(folder: str, field: str, storage) -> None:
    """A LAN folder (``sync_to``, ``sync_from``) may not lie in the storage root or the work root: results
    synced down into another project's folder would become that project's newest run."""
    target = Path(folder).resolve()
    roots = [storage.root] if storage.is_local else [storage.workspace("x").parent]
    for root in roots:
        root = Path(root).resolve()
        if target == root or root in target.parents:
            inside = target.relative_to(root).parts
            what = f"project {inside[0]!r}'s folder" if inside else "the storage root itself"
            raise ConfigError([(field, f"{folder} is inside {root} ({what}): SciOps keeps the projects there, and "
                                       "a run may not write into another project's folder nor sync a project onto "
                                       "itself; give the LAN copy of this project, outside that folder")])


def check_budget(cfg: config_mod.RunConfig, project: str, images: int, macro_sha: str) -> dict[str, Any] | None:
    """Estimate the run from past runs of the same macro; ConfigError on ``budget_usd`` if over.

    Without a past run there is nothing to estimate from: the cap is then enforced while
    the array runs (``run_array`` checks the spend at every poll). Without a budget the ledger
    is not read at all: a ledger that is down or slow never holds up a run that does not need it.
    """
    if not cfg.budget_usd:
        return None
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
    est = backend_for(cfg).estimate(images, perf["seconds_per_image"])
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
        project = conf.get("project")
        doc = {"run_id": safe_run_id(airflow_run_id), "airflow_run_id": airflow_run_id, "dag_id": dag_id,
               "trigger": trigger_label(trigger, airflow_run_id), "status": REFUSED, "reason": str(exc),
               "project": project if isinstance(project, str) else repr(project),
               "macro": {"name": conf.get("macro") if isinstance(conf.get("macro"), str) else None},
               "params": _shown_params(conf),  # project.yaml's values may not have been read
               "started_at": started, "ended_at": time.time(),
               "phases": {"validate": {"status": "failed", "start": started, "end": time.time(),
                                       "error": str(exc)}}}
        try:
            ledger.write(doc)
            log.info("refused run %s recorded in the ledger", doc["run_id"])
        except Exception as lexc:  # noqa: BLE001 - the refusal itself is what the user must see
            log.error("the refused run could not be written to the ledger (%s: %s)", type(lexc).__name__, lexc)
        raise


def _shown_params(conf: dict[str, Any]) -> dict[str, Any]:
    """A refused run's parameters as its ledger row keeps them: each key and value cut short (``brief``) when
    long, at most MAX_CONF_KEYS of them: a refused 10 MB value must not become a 10 MB ledger row."""
    import json

    out = {}
    for key, value in list(config_mod.merge(conf).items())[:config_mod.MAX_CONF_KEYS]:
        short = len(json.dumps(value, default=str)) <= 2000
        out[key if isinstance(key, str) and len(key) <= 100 else brief(key)] = value if short else brief(value)
    return out


def read_series(info: RunInfo, cfg: config_mod.RunConfig, project: Project, images: list[str], storage,
                listing: dict[str, Any] | None, worker_launcher: dict[str, Any] | None) -> list[str]:
    """The units of work of ``images``: each file read through Bio-Formats as its series (and channels).

    Its files are read once here, on this worker (on an S3 root they are fetched first), and
    what they hold is kept in ``work/series.json`` for ``plan``. Refuses, before anything is spent,
    files that cannot be read (unless ``skip_unreadable``) and series too large for ``memory``.
    """
    files = [rel for rel in images if bioformats.needs_bioformats(rel)]
    fix = ("run scripts/bioformats.sh there (or set SCIOPS_IJ_PLUGINS to where it put the jar), or use Fiji "
           "(launcher: fiji)")
    if not (worker_launcher and worker_launcher.get("bioformats")):
        raise ConfigError([("launcher", f"{len(files)} file(s) such as input/{files[0]} are read through Bio-Formats, "
                                        f"and this Airflow worker's ImageJ has no Bio-Formats to read their series: "
                                        f"{fix}")])
    if info.launcher.get("bioformats") is False:
        raise ConfigError([("launcher", f"{len(files)} file(s) such as input/{files[0]} are read through Bio-Formats, "
                                        f"and the cluster's ImageJ 1 has no Bio-Formats: {fix}")])
    if listing is not None:
        sync(storage.tree(project.name), LocalTree(project.root), source=listing,
             include=[f"input/{rel}" for rel in files], label="fetch the Bio-Formats files to read their series")
    heap = contract.heap_mb(cfg.memory_mb)
    probed: dict[str, dict[str, Any]] = {}
    for rel in files:   # what the header shows (empty, cut short, another format) needs no JVM
        problem = image_problem(project.input_dir / rel, heap)
        if problem and problem[0] == "input":
            probed[rel] = {"error": problem[1]}
    probed.update(bioformats.probe([rel for rel in files if rel not in probed], project.input_dir, worker_launcher,
                                   cfg.memory_mb, memo_dir=Path(contract.memo_dir(str(Path(info.run_dir, "work"))))))
    bioformats.save(Path(info.run_dir, "work"), probed)
    units, unreadable = bioformats.check(images, probed, cfg, heap)
    n_series = sum(1 for u in units if "#" in u)
    log.info("Bio-Formats: %d file(s) hold %d unit(s) of work (series=%s, channel=%s)%s", len(files), n_series,
             cfg.series, cfg.channel, f"; {len(unreadable)} unreadable, listed in failures.csv" if unreadable else "")
    return units


def validate(conf: dict[str, Any], airflow_run_id: str,
             publish: Callable[[RunInfo], None] | None = None) -> RunInfo:
    """Check everything before anything is spent; returns the run record later tasks get.

    ``publish`` receives the run record as soon as the run folder exists, before the smoke
    run, so that ``record`` can write ``run.json`` even when the smoke run fails.
    """
    started = time.time()
    storage = storage_for(conf)
    cfg, project, images, macro, listing, defaults, ids = check_project(conf, storage)
    chosen = {k: v for k, v in config_mod.sources(conf, defaults).items() if v != "default"}
    log.info("parameters set by the run or project.yaml (the rest are built-in defaults): %s",
             ", ".join(f"{k}={getattr(cfg, k)!r} ({v})" for k, v in chosen.items()) or "none")
    # cheap before slow: settings and the budget estimate need nothing remote; the cluster checks reach out
    with backend_for(cfg) as backend:
        backend.check_settings(project.name, airflow_run_id)
        estimate = check_budget(cfg, project.name, len(images), macro_sha256(macro))
        launcher, smoke_launcher = backend.check(project, airflow_run_id)
    run_id = safe_run_id(airflow_run_id)
    run_dir = claim_run_dir(project.run_dir(run_id), airflow_run_id)   # this run's alone, or refused
    (run_dir / PHASES).mkdir(parents=True, exist_ok=True)
    # the run's images and their content ids, in order: plan reads them instead of listing input/ again
    write_json(run_dir / "work" / "inputs.json", {rel: ids.get(rel) for rel in images})
    info = RunInfo(run_id=run_id, airflow_run_id=airflow_run_id, project=project.name,
                   project_root=str(project.root), run_dir=str(run_dir), config=cfg, config_sources=chosen,
                   images=len(images), macro_path=str(macro), macro_sha256=macro_sha256(macro), launcher=launcher,
                   estimate=estimate)
    with phase(run_dir, "validate", start=started):
        if publish:
            publish(info)
        if any(needs_bioformats(rel) for rel in images):
            images = read_series(info, cfg, project, images, storage, listing, smoke_launcher)
            info = info.model_copy(update={"images": len(images)})
            if publish:
                publish(info)
        if cfg.smoke_test and smoke_launcher:
            if listing is not None:  # the smoke images only; the rest is staged in later
                sync(storage.tree(project.name), LocalTree(project.root), source=listing,
                     include=sorted({f"input/{unit_parts(u)[0]}" for u in images[:SMOKE_FETCH]}),
                     label="fetch smoke-test images")
            job = stage_job_files(run_dir / "work", macro)
            with info.backend() as backend:
                manifest = manifest_of(info, backend, project, job, chunks=[], expected=expected_outputs(macro),
                                       launcher=smoke_launcher, input_dir=str(project.input_dir),
                                       macro_path=str(job["macro_run"]), driver_path=str(job["driver"]),
                                       **({"bioformats_memo": contract.memo_dir(str(run_dir / "work"))}
                                          if any(unit_parts(u)[1] is not None for u in images) else {}))
            summary = smoke_run(manifest, smoke_candidates(project.input_dir, images, cfg.memory_mb))
            info = info.model_copy(update={"imagej_version": summary.get("imagej_version")})
        elif cfg.smoke_test:
            log.info("no ImageJ on this worker: the macro is first tried by the cluster's tasks")
    log.info("run %s of project %s: %d image(s), macro %s (sha256 %s), ImageJ %s", run_id, project.name,
             len(images), cfg.macro, info.macro_sha256[:12], info.imagej_version or "not smoke-tested")
    return info
