"""The project convention, and what a run writes into it.

```
<project>/
  project.yaml        optional run defaults (any RunConfig field except project)
  bin/  input/  src/
  output/<run_id>/    everything one run produced; never shared between runs
      results.csv results.parquet summary.csv failures.csv run.json logs/
      work/           manifest, job files, per-image outputs, status lines
```
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sciops import JOB_DIR, MACRO_DIR
from sciops.errors import ConfigError, StorageError

OUTPUTS_TAG = re.compile(r"^\s*//\s*@sciops\s+outputs:\s*(.+)$", re.MULTILINE)
#: Shipped macros a macro runs with runMacro beside itself (``// @sciops uses: percent_positive.ijm``):
#: staged into the run's job folder with it.
USES_TAG = re.compile(r"^//\s*@sciops\s+uses:\s*(.+)$", re.MULTILINE)


def safe_run_id(run_id: str) -> str:
    """An Airflow run id (``manual__2026-11-26T22:50:00.123+00:00``) as a folder and job name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:120] or "run"


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
        return self.output_dir / safe_run_id(run_id)

    def defaults(self) -> dict[str, Any]:
        """Run defaults from ``project.yaml`` ({} when there is none)."""
        path = self.root / "project.yaml"
        if not path.exists() and not path.is_symlink():
            return {}
        self.check_inside(path, "project.yaml", "put the file itself in the project")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError([("project.yaml", "is not UTF-8 text; write it as key: value lines or remove it")]) \
                from None
        except yaml.YAMLError as exc:
            # the position and the problem only: the file's own text is not echoed (it may not be a config at all)
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError([("project.yaml", f"is not valid YAML{where} ({getattr(exc, 'problem', None) or 'syntax'}"
                                                "); fix the file or remove it")]) from None
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
        if "/" not in macro:
            shipped = MACRO_DIR / (macro if macro.endswith(".ijm") else macro + ".ijm")
            if shipped.is_file():
                return shipped
        candidate = (self.root / macro).resolve()
        if self.root.resolve() in candidate.parents and candidate.is_file():
            return candidate
        shipped_names = sorted(p.stem for p in MACRO_DIR.glob("*.ijm"))
        raise ConfigError([("macro", f"{macro!r} is neither a shipped macro ({', '.join(shipped_names)}) nor a file "
                                     f"in project {self.name!r} (e.g. 'src/{macro.split('/')[-1]}')")])


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


#: ``images_per_task: 0``: at least this many images per task, ...
AUTO_MIN_PER_TASK = 25
#: ... and, where the slots are known (the local backend), chunks of about this many a slot at first.
#: There a slot's runner goes on with the array's next chunks in its warm JVM (sciops_task.py's
#: chaining): a JVM costs more than its start (~0.5 s beside a busy JVM), its JIT warms up over its first
#: ~1,000 images (count_nuclei on 128 px images: 150-250 ms for the first 10, 40-90 ms to the 50th,
#: 15-20 ms to the 400th, 8 ms from the 1,600th). So chunks cost little but a claim, and the tapering
#: tail evens out the slots' ends without a JVM start each.
AUTO_TASKS_PER_SLOT = 2
#: ... then tapering (guided scheduling): each next chunk is the images left / slots, down to this
#: fraction of the first size, so the slots run out of work at nearly the same time. With 8 even
#: chunks a slot, one slot waited 2.8-6.9 s for the other at the end of a 20,000-image run; with
#: one long chunk a slot and one short one (no chaining), 0.9-6.9 s.
AUTO_TAPER = 16


def images_per_task(n_images: int, given: int, slots: int | None) -> int:
    """The (first) chunk size: ``given``, or for 0 (auto) :data:`AUTO_MIN_PER_TASK`, more when ``slots`` (tasks
    run at once, when the backend knows) would otherwise each run more than :data:`AUTO_TASKS_PER_SLOT` tasks."""
    if given:
        return given
    if not slots:
        return AUTO_MIN_PER_TASK
    return max(AUTO_MIN_PER_TASK, -(-n_images // (slots * AUTO_TASKS_PER_SLOT)))


def chunk_sizes(n_images: int, given: int, slots: int | None) -> list[int]:
    """The images in each task, in task order: ``given`` (or 25) each; auto with known slots tapers.

    Auto with known slots: chunks of :func:`images_per_task` while there is plenty left, then the
    images left ÷ slots, never under 1/:data:`AUTO_TAPER` of the first size (nor 25). Schedulers start
    array tasks in index order, so the small chunks run last and even out the slots' ends.
    """
    size = images_per_task(n_images, given, slots)
    if given or not slots or size <= AUTO_MIN_PER_TASK:
        return [min(size, n_images - i) for i in range(0, n_images, size)]
    smallest = max(AUTO_MIN_PER_TASK, -(-size // AUTO_TAPER))
    sizes, left = [], n_images
    while left > 0:
        s = min(size, max(smallest, -(-left // slots)))
        if left - s < smallest:   # no crumb of a chunk at the very end: in the last one, or the last two halve it
            s = left if left - s < smallest // 2 or left < 2 * AUTO_MIN_PER_TASK else -(-left // 2)
        sizes.append(s)
        left -= s
    return sizes


def chunk(images: list[str], sizes: list[int]) -> list[list[str]]:
    out, at = [], 0
    for size in sizes:
        out.append(images[at:at + size])
        at += size
    return out


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
    from sciops.imaging.macros import headless_source

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


def read_manifest(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
