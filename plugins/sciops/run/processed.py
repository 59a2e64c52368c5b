"""Which images of a project a macro has already processed: what an ``only_new`` run leaves out.

An image counts as processed by a macro when a run of that macro (its sha256) with the same
``macro_args`` finished it ``ok``. It is new again when its content changes (same name, new
bytes) or when the macro or its arguments change (another key, so every image is new). Content
is known without reading images: on S3 by size and ETag, in a folder by size and mtime (from
the one listing of ``input/`` a run makes anyway).

One index per project and key, ``<project>/.sciops/processed/<key>.json``: image → content
id when it was processed. ``plan`` records the content ids of the images it planned
(``work/images.json``); ``record`` adds the ones that ended ``ok``. ``.sciops/`` is the
project's own bookkeeping, beside ``output/`` (which holds run folders only): sync up leaves
it alone like ``output/``, so it is never overwritten or deleted from a LAN copy.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sciops.errors import StorageError

log = logging.getLogger(__name__)
FOLDER = (".sciops", "processed")


def key(macro_sha256: str, macro_args: dict[str, Any]) -> str:
    """The index a macro and its arguments share: their digest (the order of the arguments does not matter)."""
    text = json.dumps({"macro": macro_sha256, "args": macro_args}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def content_ids(storage, project: str, listing: dict[str, Any] | None = None) -> dict[str, str]:
    """Every file under ``input/`` → its content id (``size:etag`` on S3, ``size:mtime_ns`` in a folder).

    ``listing``: the project's listing when the caller has it (validate's, relative to the project).
    """
    if listing is None:
        entries = storage.tree(project, "input").list()
    else:
        entries = {rel[len("input/"):]: e for rel, e in listing.items() if rel.startswith("input/")}
    return {rel: f"{e.size}:{e.etag if e.etag else e.mtime_ns}" for rel, e in entries.items()}


def read(storage, project: str, index_key: str) -> dict[str, str]:
    """The project's index for ``index_key`` ({} when nothing was processed with it yet)."""
    parts = (project, *FOLDER, f"{index_key}.json")
    try:
        if not storage.exists(*parts):
            return {}
        data = json.loads(storage.read_bytes(*parts))
    except (StorageError, ValueError) as exc:
        log.warning("the processed-images index %s is unreadable (%s): every image counts as new", "/".join(parts),
                    exc)
        return {}
    return data.get("images", {}) if isinstance(data, dict) else {}


def new_images(images: list[str], ids: dict[str, str], done: dict[str, str]) -> list[str]:
    """The images whose content this macro has not processed: never, or not as they are now."""
    return [rel for rel in images if done.get(rel) != ids.get(rel)]


def add(storage, project: str, index_key: str, processed: dict[str, str], run_id: str) -> int:
    """Record ``processed`` (image → content id) in the index; returns how many images it now holds."""
    if not processed:
        return len(read(storage, project, index_key))
    images = {**read(storage, project, index_key), **processed}
    body = json.dumps({"key": index_key, "last_run": run_id, "images": images}, separators=(",", ":")).encode()
    storage.write_bytes(project, *FOLDER, f"{index_key}.json", data=body)
    return len(images)


LATEST = (".sciops", "latest", "summary.csv")


def update_latest(storage, project: str, run_id: str, macro: str, summary_csv) -> tuple[str, int]:
    """``<project>/.sciops/latest/summary.csv``: every run's ``summary.csv`` rows, the newest per image.

    Incremental runs each hold a part of the project; this is the one table of all of them
    (columns ``run_id`` and ``macro`` first). Returns where it is and how many images it holds.
    Two runs of one project recording at the same moment can lose one's rows here (the runs'
    own tables are whole); the next run of either puts them back only for its images.
    """
    import io

    import pandas as pd

    new = pd.read_csv(summary_csv)
    new.insert(0, "macro", macro)
    new.insert(0, "run_id", run_id)
    parts = (project, *LATEST)
    old = pd.read_csv(io.BytesIO(storage.read_bytes(*parts))) if storage.exists(*parts) else new.iloc[0:0]
    table = pd.concat([old[~old["image"].isin(new["image"])], new], ignore_index=True).sort_values("image")
    where = storage.write_bytes(*parts, data=table.to_csv(index=False).encode())
    return where, len(table)
