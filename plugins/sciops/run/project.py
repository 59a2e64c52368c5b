"""The project convention, and what a run writes into it.

```
<project>/
  project.yaml        optional run defaults (any RunConfig field except project)
  bin/  input/  src/
  output/<run_id>/    everything one run produced; never shared between runs
      .sciops-run     whose folder this is: the exact Airflow run id (:func:`claim_run_dir`)
      results.csv results.parquet summary.csv failures.csv run.json logs/
      work/           manifest, job files, per-image outputs, status lines
```

``<run_id>`` is the run's folder name, :func:`safe_run_id` of its Airflow run id: one Airflow
run id, one folder, and no two ids the same folder (see there for the rule).
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sciops_node.contract import Manifest
from sciops import JOB_DIR, MACRO_DIR
from sciops.errors import ConfigError, StorageError
from sciops.imaging.macros import headless_source
from sciops.run.bounded import MAX_YAML_BYTES, brief, load_yaml

OUTPUTS_TAG = re.compile(r"^\s*//\s*@sciops\s+outputs:\s*(.+)$", re.MULTILINE)
#: Shipped macros a macro runs with runMacro beside itself (``// @sciops uses: percent_positive.ijm``):
#: staged into the run's job folder with it.
USES_TAG = re.compile(r"^//\s*@sciops\s+uses:\s*(.+)$", re.MULTILINE)


#: The longest folder name a run id becomes.
RUN_FOLDER_MAX = 120
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
#: Airflow's own run ids: ``<run type>__<its date-time, UTC, ISO 8601>`` (``manual__2026-11-26T22:50:00.123456+00:00``),
#: with ``_<random letters>`` after it when the run has no logical date (Airflow 3's ``DagRun.generate_run_id``).
AIRFLOW_RUN_ID = re.compile(r"[a-z_]+__\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?\+00:00(?:_[A-Za-z0-9]+)?")
#: ... and the folders they become: each ``:`` and the ``+`` as ``-``, nothing else changed.
AIRFLOW_RUN_FOLDER = re.compile(r"[a-z_]+__\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:\.\d{1,6})?-00-00(?:_[A-Za-z0-9]+)?")
#: The end of a folder name made with a hash of its run id.
HASHED_FOLDER = re.compile(r"-[0-9a-f]{8}$")


def safe_run_id(run_id: str) -> str:
    """An Airflow run id as the run's folder (and job) name: letters, digits, ``. _ -``; injective.

    Three kinds of run id, whose folders cannot meet (the rule docs/reliability.md gives):

    1. Airflow's own (``manual__2026-11-26T22:50:00.123456+00:00``, :data:`AIRFLOW_RUN_ID`): each ``:``
       and the ``+`` become ``-`` (``manual__2026-11-26T22-50-00.123456-00-00``), the folder names
       SciOps always gave them. Where they were is fixed by the pattern, so no two such ids meet.
    2. An id that is a folder name already (``nightly__20261126T020000__0``, ``x-1``): itself, unless it
       looks like a folder of kind 1 or 3 (it is then of kind 3).
    3. Any other (``x~1``, ``x+1``, a name too long): its characters outside the safe set as ``-``, cut to
       fit, then ``-`` and the first 8 hex digits of the SHA-256 of the exact id (``x-1-3c1e…``,
       ``x-1-9b0f…``). Two ids meet only if those 32 bits do, and :func:`claim_run_dir` refuses that.
    """
    if (len(run_id) <= RUN_FOLDER_MAX and _SAFE.fullmatch(run_id) and not run_id.endswith((".", "-"))
            and not AIRFLOW_RUN_FOLDER.fullmatch(run_id) and not HASHED_FOLDER.search(run_id)):
        return run_id
    if len(run_id) <= RUN_FOLDER_MAX and AIRFLOW_RUN_ID.fullmatch(run_id):
        return run_id.replace(":", "-").replace("+", "-")
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:RUN_FOLDER_MAX - 9].rstrip("-.") or "run"
    return f"{base}-{digest}"


#: In each run folder, whose it is: the exact Airflow run id, written once by validate (:func:`claim_run_dir`).
RUN_MARKER = ".sciops-run"


def run_folder_owner(run_dir: Path) -> str | None:
    """The Airflow run id a run folder belongs to: its marker's, else (a folder a run made before markers)
    its ``run.json``'s; ``None`` when neither says."""
    marker = Path(run_dir, RUN_MARKER)
    for _ in range(20):   # a marker is created, then written: another validate may be between the two
        try:
            owner = marker.read_text(encoding="utf-8").rstrip("\n")
        except FileNotFoundError:
            break
        if owner:
            return owner
        time.sleep(0.1)
    else:
        return "(an unknown run: its marker is empty)"
    try:
        return json.loads(Path(run_dir, "run.json").read_text(encoding="utf-8")).get("airflow_run_id") or None
    except (OSError, ValueError):
        return None


def claim_run_dir(run_dir: Path, airflow_run_id: str) -> Path:
    """Create ``run_dir`` for this run alone, or find it already this run's (a retried validate).

    The marker :data:`RUN_MARKER` is created with ``O_CREAT | O_EXCL``: of two runs that reach the same
    folder at once, one makes it and the other reads it. A folder another Airflow run holds (its
    marker, or for a folder made before markers its ``run.json``, or its ``work/phases/`` with no
    ``run.json`` saying whose) is refused with a ConfigError naming both run ids; nothing in it is touched.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_full(exc, run_dir) or ConfigError([("project", f"cannot create the run folder {run_dir} "
                                                                  f"({exc.strerror}); make its output/ folder writable "
                                                                  "by the worker")]) from None
    marker = run_dir / RUN_MARKER

    def refuse(owner: str | None) -> ConfigError:
        whose = f"Airflow run {owner!r}" if owner else "another run (it has no marker: made before SciOps marked run folders)"
        return ConfigError([("run_id", f"the run folder {run_dir} belongs to {whose}; this run, {airflow_run_id!r}, "
                                       f"maps to the same folder and is refused so that the other run's results stay "
                                       f"as they are. Trigger it again under another run id")])

    if not marker.exists():   # a folder made before markers: its run.json, or a validate's phases/, say whose
        legacy = run_folder_owner(run_dir)
        legacy = "" if legacy is None and (run_dir / "work" / "phases").is_dir() else legacy
        if legacy is not None and legacy != airflow_run_id:
            raise refuse(legacy)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        owner = run_folder_owner(run_dir)
        if owner != airflow_run_id:
            raise refuse(owner) from None
        return run_dir
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(airflow_run_id + "\n")
    except OSError as exc:
        marker.unlink(missing_ok=True)
        raise disk_full(exc, marker) or exc
    return run_dir


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Project:
    name: str
    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def src_dir(self) -> Path:
        return self.root / "src"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    def run_dir(self, run_id: str) -> Path:
        """The folder of the run whose SciOps run id (folder name, :func:`safe_run_id`) is ``run_id``."""
        if not _SAFE.fullmatch(run_id):
            raise ValueError(f"{run_id!r} is not a run folder name: give safe_run_id(<the Airflow run id>)")
        return self.output_dir / run_id

    def defaults(self) -> dict[str, Any]:
        """Run defaults from ``project.yaml`` ({} when there is none)."""
        path = self.root / "project.yaml"
        if not path.exists() and not path.is_symlink():
            return {}
        self.check_inside(path, "project.yaml", "put the file itself in the project")
        with open(path, "rb") as fh:   # never more than the cap + 1 byte: a 50 MB file is refused unread
            data = load_yaml(fh.read(MAX_YAML_BYTES + 1), "project.yaml")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError([("project.yaml", "must be a mapping of run defaults (key: value lines)")])
        return data

    def check_inside(self, path: Path, field: str, fix: str) -> None:
        """A ConfigError on ``field`` unless ``path`` (symlinks followed) stays inside the project folder."""
        root = self.root.resolve()
        target = path.resolve()
        if target != root and root not in target.parents:
            raise ConfigError([(field, f"{path.relative_to(self.root)} leads outside project {self.name!r} (a "
                                       f"symlink); {fix}")])

    def resolve_macro(self, macro: str) -> Path:
        """A shipped macro by name, or a file inside the project (``src/x.ijm``)."""
        try:   # a name longer than the filesystem takes (ENAMETOOLONG) is just not found
            if "/" not in macro:
                shipped = MACRO_DIR / (macro if macro.endswith(".ijm") else macro + ".ijm")
                if shipped.is_file():
                    return shipped
            candidate = (self.root / macro).resolve()
            if self.root.resolve() in candidate.parents and candidate.is_file():
                return candidate
        except OSError:
            pass
        shipped_names = sorted(p.stem for p in MACRO_DIR.glob("*.ijm"))
        raise ConfigError([("macro", f"{brief(macro)} is neither a shipped macro ({', '.join(shipped_names)}) nor a "
                                     f"file in project {self.name!r} (e.g. 'src/{macro.split('/')[-1][:60]}')")])


def match_images(rels: list[str], patterns: list[str]) -> list[str]:
    """The paths (relative to ``input/``) that match a pattern, case-insensitively; hidden ones skipped."""
    pats = [p.lower() for p in patterns]
    return sorted(rel for rel in rels
                  if not any(part.startswith(".") for part in rel.split("/"))
                  and any(fnmatch.fnmatchcase(rel.lower(), p) for p in pats))


def expected_outputs(macro: Path) -> list[str]:
    """Per-image files a macro promises (``// @sciops outputs: a.csv b.csv``); default any CSV."""
    m = OUTPUTS_TAG.search(macro.read_text(encoding="utf-8", errors="replace"))
    return m.group(1).split() if m else ["*.csv"]


def macro_sha256(macro: Path) -> str:
    """What identifies a macro's code: its SHA-256, or, for one whose ``@sciops uses:`` line names shipped
    macros it runs, the SHA-256 of its own and theirs (a change in one of them is a new macro for the
    processed-images index, the ledger's past performance and plan's check)."""
    used = used_macros(macro)
    if not used:
        return sha256(macro)
    return hashlib.sha256(" ".join([sha256(macro)] + [f"{p.name}:{sha256(p)}" for p in used]).encode()).hexdigest()


def used_macros(macro: Path) -> list[Path]:
    """The shipped macros ``macro`` names in its ``@sciops uses:`` line; ConfigError for one that is not shipped."""
    names = [n for m in USES_TAG.finditer(macro.read_text(encoding="utf-8", errors="replace"))
             for n in m.group(1).split()]
    missing = [n for n in names if "/" in n or not (MACRO_DIR / n).is_file()]
    if missing:
        raise ConfigError([("macro", f"{macro.name} uses {', '.join(missing)}, which SciOps does not ship; "
                                     f"shipped: {', '.join(sorted(p.name for p in MACRO_DIR.glob('*.ijm')))}")])
    return [MACRO_DIR / n for n in names]


def stage_job_files(work: Path, macro: Path) -> dict[str, Path]:
    """Copy the runner (``sciops_task.py`` and its package ``sciops_node/``), the driver and the macro
    into the run: a run is self-contained.

    ``macro_run`` is what ImageJ runs: the macro itself, or, for one with Fiji ``#@`` parameters,
    ``<name>.headless.ijm`` beside it (:func:`sciops.imaging.macros.headless_source`).
    """
    job = work / "job"
    job.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, src in (("runner", JOB_DIR / "sciops_task.py"), ("driver", JOB_DIR / "driver.ijm"),
                     ("localq", JOB_DIR / "localq.py"), ("macro", macro)):
        dest = job / src.name
        shutil.copyfile(src, dest)
        paths[key] = dest
    # the runner imports its package from its own folder; replaced whole, so that a module removed
    # since an earlier staging (validate stages, then plan) cannot linger; no bytecode of this worker's
    paths["node"] = job / "sciops_node"
    shutil.rmtree(paths["node"], ignore_errors=True)
    shutil.copytree(JOB_DIR / "sciops_node", paths["node"], ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for used in used_macros(macro):
        shutil.copyfile(used, job / used.name)
    text = macro.read_text(encoding="utf-8", errors="replace")
    headless = headless_source(text)
    paths["macro_run"] = paths["macro"]
    if headless != text:
        paths["macro_run"] = job / f"{macro.stem}.headless.ijm"
        paths["macro_run"].write_text(headless, encoding="utf-8")
    return paths


def is_disk_full(exc: BaseException) -> bool:
    """An error that says the filesystem is full (or the quota spent), as Python or pyarrow says it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def disk_full(exc: BaseException, path: Path | str) -> StorageError | None:
    """For an error that :func:`is_disk_full`, a StorageError saying so: which path, and how much its
    filesystem has free (``shutil.disk_usage``); ``None`` for any other error."""
    if not is_disk_full(exc):
        return None
    path = Path(getattr(exc, "filename", None) or path)
    where = next((p for p in (path, *path.parents) if p.exists()), None)
    try:
        usage = shutil.disk_usage(where) if where else None
    except OSError:
        usage = None
    room = (f"{usage.free:,} bytes free of {usage.total:,} on the filesystem holding {where}" if usage
            else "free space unknown")
    return StorageError(f"no space left on device: could not write {'in ' if path.is_dir() else ''}{path} ({room}); "
                        "free space there (or move the storage root), then clear the failed task")


def write_atomic(path: Path | str, data: bytes | str) -> Path:
    """Write a file atomically (a temp file beside it, then a rename): a reader never sees half a file,
    and the temp file never stays behind. A full filesystem is a StorageError naming the path and the
    bytes free (:func:`disk_full`); nothing of the file is left then."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        full = disk_full(exc, path)
        if full:
            raise full from exc
        raise
    return path


def write_json(path: Path | str, data: Any) -> Path:
    """Write JSON atomically (:func:`write_atomic`)."""
    return write_atomic(path, json.dumps(data, indent=1, default=str))


def read_manifest(path: Path | str) -> Manifest:
    """The run's manifest (``work/manifest.json``), typed: the node's contract."""
    return Manifest.load(str(path))
