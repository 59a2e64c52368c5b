"""Incremental, parallel, resumable sync between a folder and a storage prefix.

Used for sync up (a LAN project folder → the storage root), sync down (``output/<run_id>/``
→ the LAN folder) and, on the local backend, stage in / stage out.

- A file is transferred when it is missing at the destination, its size differs, or its
  content differs: S3's ETag (the MD5, or for a multipart object the MD5 of the parts'
  MD5s with ``-N``, computed locally with the same part size), and where the ETag cannot
  say (SSE-KMS objects, parts of an unknown size) the MD5 SciOps stored with the object
  (see :mod:`sciops.storage.trees`, which holds the two kinds of tree behind one interface). Local
  checksums are cached by (size, mtime) so a no-op resync reads no file.
- Nothing is deleted at the destination unless ``delete=True``.
- Interrupted? Run it again: finished files are skipped by the rule above, a multipart
  upload reuses the parts already uploaded, a download continues its ``.sciops-part`` file.
- Every relative path is checked: nothing lands outside the destination.
- A progress line (files, bytes, rate, ETA) is logged every ``progress_seconds``.
- Sync up on S3 keeps a manifest of what it wrote (:class:`SyncManifest`): with
  ``verify=False`` the bucket's state is read from it instead of listed.
"""
from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sciops.errors import StorageError
from sciops.storage.root import PROJECT_PARTS
from sciops.storage.s3 import S3RequestError
from sciops.storage.trees import Entry, LocalTree, MiB, S3Tree, Tree, etag_shape, safe_rel, selected
from sciops.storage.trees.local import refused_link

__all__ = ["Entry", "LocalTree", "S3Tree", "SyncManifest", "SyncStats", "sync", "sync_down", "sync_up", "stage_in",
           "stage_out", "log_stats"]

log = logging.getLogger(__name__)



@dataclass
class SyncStats:
    direction: str
    source: str
    destination: str
    files: int = 0                   # files at the source (after filters)
    transferred: int = 0
    skipped: int = 0
    deleted: int = 0
    bytes: int = 0
    parts_reused: int = 0
    resumed_bytes: int = 0
    seconds: float = 0.0
    destination_from: str = "listing"  # or where the destination's state came from instead (a manifest)
    transferred_paths: list[str] = field(default_factory=list)
    #: objects not synced because their key is no file path (``a/../b``): key → why (sciops.storage.s3_keys)
    unsafe_keys: dict[str, str] = field(default_factory=dict)
    # for the caller's bookkeeping (the sync manifest), not reported
    dest_state: dict[str, Entry] = field(default_factory=dict, repr=False)
    written: dict[str, Entry] = field(default_factory=dict, repr=False)
    deleted_paths: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        for internal in ("dest_state", "written", "deleted_paths"):
            del d[internal]
        d["transferred_paths"] = d["transferred_paths"][:50]
        return d


class Progress:
    """Counts done files/bytes; logs one line every ``every`` seconds and at the end."""

    def __init__(self, label: str, files: int, nbytes: int, every: float, emit: Callable[[str], None]):
        self.label, self.files, self.nbytes, self.every, self.emit = label, files, nbytes, every, emit
        self.done_files = self.done_bytes = 0
        self.start = self.last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, nbytes: int, files: int = 0) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_files += files
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                self.emit(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.done_bytes / elapsed
        left = self.nbytes - self.done_bytes
        eta = f"{left / rate:.0f} s" if rate > 0 and left > 0 else ("0 s" if left <= 0 else "?")
        return (f"{self.label}: {self.done_files}/{self.files} files, {self.done_bytes / MiB:.1f}/"
                f"{self.nbytes / MiB:.1f} MiB, {rate / MiB:.2f} MiB/s, ETA {eta}")


def sync(src: Tree, dst: Tree, *, delete: bool = False, workers: int = 16,
         include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
         progress_seconds: float = 5.0, label: str | None = None,
         emit: Callable[[str], None] | None = None, source: dict[str, Entry] | None = None,
         dest: dict[str, Entry] | None = None, before_write: Callable[[], None] | None = None) -> SyncStats:
    """Make ``dst`` hold every file of ``src`` (filtered); see the module docstring.

    ``source``: the source's listing when the caller has it already (it is not listed again).
    ``dest``: the destination's state when the caller knows it (the sync manifest): not listed.
    ``before_write``: called once before the first transfer or deletion (not at all for a no-op).
    """
    include = list(include) if include is not None else None
    exclude = list(exclude or [])
    direction = "up" if dst.is_remote else "down" if src.is_remote else "copy"
    label = label or f"sync {direction} {src} -> {dst}"
    emit = emit or log.info
    t0 = time.monotonic()
    stats = SyncStats(direction, str(src), str(dst))
    with ThreadPoolExecutor(2) as pool:  # list both sides at once
        fs = pool.submit(src.list, include, exclude) if source is None else None
        fd = pool.submit(dst.list, include, exclude) if dest is None else None
        source, dest = (fs.result() if fs else source), (fd.result() if fd else dest)
    stats.dest_state = dest
    stats.unsafe_keys = dict(getattr(src, "unsafe", None) or {})
    source = {rel: e for rel, e in source.items() if selected(rel, include, exclude)}
    for rel in source:
        safe_rel(rel)  # refuse the whole sync before writing anything if one path is unsafe
    stats.files = len(source)

    todo = []
    for rel, e in source.items():
        d = dest.get(rel)
        if d is None or d.size != e.size or not _same_content(src, dst, rel, e, d):
            todo.append(rel)
        else:
            stats.skipped += 1
    doomed = sorted(rel for rel in set(dest) - set(source) if selected(rel, include, exclude)) if delete else []
    if (todo or doomed) and before_write is not None:
        before_write()
    total = sum(source[r].size for r in todo)
    progress = Progress(label, len(todo), total, progress_seconds, emit)
    lock = threading.Lock()

    def one(rel: str) -> None:
        reused, resumed, etag = dst.receive(src, rel, source[rel], progress)
        with lock:
            stats.written[rel] = Entry(source[rel].size, etag)
            stats.transferred += 1
            stats.bytes += source[rel].size
            stats.parts_reused += reused
            stats.resumed_bytes += resumed
            stats.transferred_paths.append(rel)
        progress.add(0, files=1)

    errors: list[str] = []
    try:
        if todo:
            with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
                futures = {pool.submit(one, rel): rel for rel in todo}
                for fut in as_completed(futures):
                    exc = fut.exception()
                    if exc is not None:
                        errors.append(f"{futures[fut]}: {exc}")
        if not errors:
            for rel in doomed:
                dst.delete(rel)
                stats.deleted += 1
                stats.deleted_paths.append(rel)
    finally:
        src.save()
        dst.save()
    stats.seconds = round(time.monotonic() - t0, 3)
    emit(progress.line() + f" (done in {stats.seconds:.1f} s; {stats.skipped} unchanged skipped"
         + (f", {stats.deleted} deleted" if delete else "") + ")")
    if errors:
        raise StorageError(f"{label}: {len(errors)} of {len(todo)} file(s) failed (run the sync again to resume): "
                           + "; ".join(errors[:5]))
    return stats


def _same_content(src: Tree, dst: Tree, rel: str, e: Entry, d: Entry) -> bool:
    """Same size already; same content? See :mod:`sciops.storage.trees` for why the ETag alone cannot say."""
    # this machine sent or fetched that very object: the MD5 it recorded (no request; no file read when cached)
    for tree, mine, theirs in ((src, e, d), (dst, d, e)):
        recorded = tree.object_md5(rel, theirs.etag)
        if recorded is not None:
            return recorded == tree.md5(rel, mine)
    shape = etag_shape(e.etag or d.etag, e.size)   # the ETags: MD5, or multipart MD5 of MD5s
    if src.checksum(rel, e, shape) == dst.checksum(rel, d, shape):
        return True
    mine, theirs = src.md5(rel, e), dst.md5(rel, d)   # SSE-KMS, parts of a size we cannot guess: the stored MD5
    if mine is None or mine != theirs:
        return False
    src.remember(rel, d.etag, mine)
    dst.remember(rel, e.etag, mine)
    return True


# -- the sync manifest: what sync up last wrote ------------------------------------------------
class SyncManifest:
    """``<root>/.sciops/sync/<project>.json.gz``: every object sync up keeps under ``<root>/<project>/``
    (``output/`` aside) with its size and ETag, as of the last sync up that finished.

    A sync up may take the destination's state from it instead of listing the bucket (one GET
    instead of a page per 1,000 keys). It is marked incomplete before a sync writes anything and
    rewritten when it finishes, so an interrupted or failed sync leaves a manifest that is not
    trusted: the next sync lists. What it cannot see is a change made with another tool
    (``aws s3 rm``, the console): ``verify`` lists the bucket and rewrites it.
    """

    VERSION = 1

    def __init__(self, storage, project: str):
        self.client = storage.client
        self.key = storage.key(".sciops", "sync", f"{project}.json.gz")
        self.state: dict | None = None

    def read(self) -> dict | None:
        """The manifest as stored, ``None`` when there is none or it is unreadable."""
        try:
            data = json.loads(gzip.decompress(self.client.get_bytes(self.key)))
            if data.get("version") != self.VERSION or not isinstance(data.get("objects"), dict):
                raise ValueError(f"version {data.get('version')!r}")
            data["objects"] = {rel: Entry(int(v[0]), v[1]) for rel, v in data["objects"].items()}
        except S3RequestError as exc:
            if exc.status != 404:
                raise
            data = None
        except (OSError, EOFError, zlib.error, ValueError, TypeError, IndexError, AttributeError) as exc:
            log.warning("ignoring the unreadable sync manifest s3://%s/%s (%s); listing the bucket instead",
                        self.client.bucket, self.key, exc)
            data = None
        self.state = data
        return data

    def trusted(self) -> dict | None:
        return self.state if self.state and self.state.get("complete") else None

    def write(self, objects: dict[str, Entry], complete: bool) -> None:
        body = gzip.compress(json.dumps({
            "version": self.VERSION, "complete": complete, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "by": socket.gethostname(), "objects": {rel: [e.size, e.etag] for rel, e in sorted(objects.items())},
        }, separators=(",", ":")).encode(), 6)
        self.client.put(self.key, body, len(body))

    def mark_incomplete(self) -> None:
        self.write({}, complete=False)
        self.state = {"complete": False, "objects": {}}

    def update(self, stats: SyncStats, keep: Callable[[str], bool]) -> None:
        """After a finished sync: the destination as it was, plus what was written, minus what was deleted."""
        objects = {rel: e for rel, e in stats.dest_state.items() if keep(rel)}
        for rel, e in stats.written.items():
            if e.etag:
                objects[rel] = e
            else:  # a store that does not answer a PUT with an ETag: leave it out, the next sync checks it
                objects.pop(rel, None)
        for rel in stats.deleted_paths:
            objects.pop(rel, None)
        old = self.state or {}
        if old.get("complete") and old.get("objects") == objects:
            return
        self.write(objects, complete=True)


# -- what the DAG and the CLI call ---------------------------------------------------------------
def summary_lines(stats: SyncStats) -> list[str]:
    """What the command line prints after a sync."""
    lines = [f"{stats.direction}: {stats.transferred} transferred ({stats.bytes} bytes), {stats.skipped} unchanged, "
             f"{stats.deleted} deleted, {stats.seconds:.2f} s"]
    unsafe = getattr(stats, "unsafe_keys", None) or {}
    if unsafe:
        lines.append(f"skipped {len(unsafe)} object(s) whose key is no file path: " + "; ".join(
            f"{k!r} ({why})" for k, why in list(unsafe.items())[:5]))
    if stats.destination_from != "listing":
        lines.append(f"(the bucket was not listed: its state came from the {stats.destination_from}; --verify lists "
                     "it)")
    return lines



def log_stats(d: dict) -> dict:
    """Log a transfer's counts (a :meth:`SyncStats.as_dict`, or a head node's ``aws s3 sync`` summary)."""
    if "transferred" in d:
        log.info("%s: %d file(s) transferred (%d bytes), %d unchanged, %.1f s", d["direction"], d["transferred"],
                 d["bytes"], d["skipped"], d["seconds"])
    else:
        log.info("%s by %s: %.1f s", d.get("direction"), d.get("by"), d.get("seconds") or 0)
    return d


def sync_up(storage, local_dir: Path | str, project: str, *, delete: bool = False, verify: bool = True,
            **kw) -> SyncStats:
    """A LAN project folder → ``<root>/<project>/`` (``output/`` stays behind: runs write it).

    On S3, ``verify=False`` takes the destination's state from the sync manifest when the last
    sync up finished (see :class:`SyncManifest`) instead of listing the bucket; ``delete`` always lists.
    """
    local = Path(local_dir).expanduser().resolve()
    if not (local / "input").is_dir():
        raise StorageError(f"{local} is not a project folder (it has no input/ folder); give the folder that "
                           "holds input/, src/ and project.yaml")
    # output/ (runs write it) and .sciops/ (what runs processed: sciops.run.processed) stay behind
    tree, label, exclude = storage.tree(project), f"sync up {project}", ["output", ".sciops"]
    if not tree.is_remote:
        return sync(LocalTree(local), tree, delete=delete, exclude=exclude, label=label, **kw)
    manifest = SyncManifest(storage, project)
    manifest.read()
    known = None if (verify or delete) else manifest.trusted()
    stats = sync(LocalTree(local), tree, delete=delete, exclude=exclude, label=label,
                 dest=known["objects"] if known else None, before_write=manifest.mark_incomplete, **kw)
    if known:
        stats.destination_from = f"sync manifest of {known.get('written')} by {known.get('by')}"
    manifest.update(stats, keep=lambda rel: selected(rel, None, exclude))
    return stats


def sync_down(storage, project: str, run_id: str, local_dir: Path | str, **kw) -> SyncStats:
    """``<root>/<project>/output/<run_id>/`` → ``<local_dir>/output/<run_id>/``; nothing else is touched."""
    base = Path(local_dir).expanduser().resolve()
    dest = base / "output" / run_id
    for folder in (base / "output", dest):   # what lies under the folder given is never followed (LocalTree.receive)
        if folder.is_symlink():
            raise StorageError(refused_link(folder))
    return sync(storage.tree(project, "output", run_id), LocalTree(dest), label=f"sync down {project}/{run_id}", **kw)


def stage_in(storage, project: str, workspace: Path | str, **kw) -> SyncStats:
    """The project's ``input/ src/ bin/ project.yaml`` → the run's working copy (this machine)."""
    return sync(storage.tree(project), LocalTree(workspace), include=PROJECT_PARTS,
                label=f"stage in {project}", **kw)


def stage_out(storage, project: str, run_id: str, run_dir: Path | str, **kw) -> SyncStats:
    """The run folder → ``<root>/<project>/output/<run_id>/``: the only prefix a run writes."""
    return sync(LocalTree(run_dir), storage.tree(project, "output", run_id), label=f"stage out {project}/{run_id}",
                **kw)
