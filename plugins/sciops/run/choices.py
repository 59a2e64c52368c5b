"""What the trigger form offers: the projects under the storage root and the macros they can run.

``project`` and ``macro`` stay free text (a name typed in is still taken), with JSON-schema
``examples``: Airflow's form shows them as a list to pick from (an ``<input list=…>`` with a
``<datalist>``). The macros are the shipped ones (``include/fiji_macros/*.ijm``, by name) and
every project's ``src/*.ijm`` (as ``src/<file>``).

This is read when the DAG file is parsed, so it must be quick and must not reach S3:

* a folder storage root is listed directly (one directory listing, and one per project's ``src/``,
  at most :data:`MAX_PROJECTS`);
* an S3 root is read from a small JSON file (``SCIOPS_FORM_CHOICES``) that tasks keep fresh: ``record``
  after each run (:func:`refresh_project`: one listing of the projects, one of the run's ``src/``) and
  the nightly scan (:func:`refresh`: every project). No file yet: no list, the fields are free text.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sciops import MACRO_DIR
from sciops.run.names import SAFE_NAME
from sciops.settings import setting

log = logging.getLogger(__name__)

#: Bounds on what the form lists (and what the cache file holds): a long list helps no one.
MAX_PROJECTS, MAX_MACROS = 500, 300


def shipped_macros() -> list[str]:
    return sorted(p.stem for p in MACRO_DIR.glob("*.ijm"))


def cache_path() -> Path:
    return Path(setting("SCIOPS_FORM_CHOICES")).expanduser()


def _is_folder_root(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def _folder_choices(root: Path) -> dict[str, list[str]]:
    projects: list[str] = []
    macros: set[str] = set()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return {"projects": [], "macros": []}
    for entry in entries:
        if len(projects) >= MAX_PROJECTS:
            break
        if not SAFE_NAME.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        projects.append(entry.name)
        try:
            macros.update(f"src/{m.name}" for m in os.scandir(Path(entry.path, "src"))
                          if m.name.endswith(".ijm") and m.is_file(follow_symlinks=False))
        except OSError:
            continue
    return {"projects": projects, "macros": sorted(macros)}


def _read_cache(root: str) -> dict[str, list[str]]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"projects": [], "macros": []}
    if not isinstance(data, dict) or data.get("root") != root.rstrip("/"):   # another root's list: not this one's
        return {"projects": [], "macros": []}
    by_project = data.get("macros") if isinstance(data.get("macros"), dict) else {}
    projects = [p for p in data.get("projects") or [] if isinstance(p, str) and SAFE_NAME.match(p)][:MAX_PROJECTS]
    macros = sorted({m for p in projects for m in by_project.get(p) or [] if isinstance(m, str)})
    return {"projects": projects, "macros": macros}


def form_choices() -> dict[str, list[str]]:
    """``{"projects": [...], "macros": [...]}`` for the trigger form; never raises, never reaches S3."""
    root = str(setting("SCIOPS_STORAGE_ROOT") or "")
    try:
        found = _folder_choices(Path(root.removeprefix("file://")).expanduser()) if _is_folder_root(root) \
            else _read_cache(root)
    except Exception as exc:  # noqa: BLE001 - the form must always parse; the list is a convenience
        log.warning("the form's project list could not be read (%s: %s)", type(exc).__name__, exc)
        found = {"projects": [], "macros": []}
    macros = shipped_macros() + [m for m in found["macros"] if m not in shipped_macros()]
    return {"projects": found["projects"], "macros": macros[:MAX_MACROS]}


def _src_macros(storage, project: str) -> list[str]:
    listing = storage.tree(project, "src").list()
    return sorted(f"src/{rel}" for rel in listing if rel.endswith(".ijm") and "/" not in rel)


def _write(storage, projects: list[str], macros: dict[str, list[str]]) -> None:
    from sciops.run.project import write_atomic

    doc = {"root": storage.url, "written_at": time.time(), "projects": projects[:MAX_PROJECTS],
           "macros": {p: macros[p][:MAX_MACROS] for p in projects[:MAX_PROJECTS] if macros.get(p)}}
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache_path(), json.dumps(doc, indent=1))


def _for_default_root(storage) -> bool:
    """Only the default root's projects are the form's (a run may name another allowed root)."""
    from sciops.storage.root import get_storage

    return not storage.is_local and storage.url == get_storage().url


def refresh(storage) -> None:
    """The whole list for an S3 root (the nightly scan): one listing per project. Never raises."""
    try:
        if _for_default_root(storage):
            projects = storage.projects()[:MAX_PROJECTS]
            _write(storage, projects, {p: _src_macros(storage, p) for p in projects})
    except Exception as exc:  # noqa: BLE001 - the form's list must never fail a scan
        log.warning("the form's project list was not refreshed (%s: %s)", type(exc).__name__, exc)


def refresh_project(storage, project: str) -> None:
    """After a run of ``project`` (record): the projects, and this project's macros. Never raises."""
    try:
        if not _for_default_root(storage):
            return
        try:
            old = json.loads(cache_path().read_text(encoding="utf-8"))
            macros: dict[str, list[str]] = old.get("macros") if old.get("root") == storage.url else {}
        except (OSError, ValueError, AttributeError):
            macros = {}
        macros = {**(macros or {}), project: _src_macros(storage, project)}
        _write(storage, storage.projects()[:MAX_PROJECTS], macros)
    except Exception as exc:  # noqa: BLE001 - the form's list must never fail a run's record
        log.warning("the form's project list was not refreshed (%s: %s)", type(exc).__name__, exc)


def with_choices(schema: dict[str, Any], examples: list[str]) -> dict[str, Any]:
    """A Param's schema with ``examples`` (Airflow's form: a list to pick from that still takes typed text)."""
    return {**schema, "examples": examples} if examples else schema
