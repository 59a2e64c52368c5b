"""Incremental, parallel, resumable sync between a folder and a storage prefix.

Used for sync up (a LAN project folder → the storage root), sync down (``output/<run_id>/``
→ the LAN folder) and, on the local backend, stage in / stage out.

- A file is transferred when it is missing at the destination, its size differs, or its
  checksum differs: S3's ETag (the MD5, or for a multipart object the MD5 of the parts'
  MD5s with ``-N``, computed locally with the same part size). Local checksums are cached
  by (size, mtime) so a no-op resync reads no file.
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
import hashlib
import json
import logging
import os
import posixpath
import shutil
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sciops.errors import StorageError
from sciops.s3 import S3Client

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024          # the AWS CLI's default multipart chunk size, too
MULTIPART_THRESHOLD = PART_SIZE      # larger files go in parts
PARTIAL_SUFFIX = ".sciops-part"
MiB = 1024 * 1024


@dataclass
class Entry:
    size: int
    etag: str | None = None          # S3's ETag; None for a local file not hashed yet
    mtime_ns: int | None = None


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


def safe_rel(rel: str) -> str:
    """A relative POSIX path that stays inside its root, or StorageError."""
    norm = posixpath.normpath(rel)
    if not rel or rel.startswith("/") or norm.startswith("../") or norm in ("..", ".") or "\x00" in rel:
        raise StorageError(f"refused path {rel!r}: it would leave the folder being synced")
    return norm


def part_size_for(size: int, parts: int) -> int:
    """The part size that cut ``size`` bytes into ``parts`` parts (8 MiB, else a whole number of MiB)."""
    if -(-size // PART_SIZE) == parts:
        return PART_SIZE
    guess = -(-size // parts)
    return -(-guess // MiB) * MiB


def file_etag(path: Path, part_size: int | None) -> str:
    """S3's ETag of this file uploaded whole (``part_size=None``) or in parts of ``part_size``."""
    with open(path, "rb") as fh:
        if part_size is None:
            h = hashlib.md5()
            for block in iter(lambda: fh.read(MiB), b""):
                h.update(block)
            return h.hexdigest()
        digests = []
        while True:
            part = fh.read(part_size)
            if not part:
                break
            digests.append(hashlib.md5(part).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def etag_shape(etag: str | None, size: int) -> int | None:
    """The part size an ETag implies (None = single-part MD5)."""
    if etag and "-" in etag:
        return part_size_for(size, int(etag.rsplit("-", 1)[1]))
    return None


class EtagCache:
    """Checksums of local files, keyed by (size, mtime): a no-op resync hashes nothing.

    Kept in ``$XDG_CACHE_HOME/sciops/etags/`` (one file per local folder), never in the folder itself.
    """

    def __init__(self, root: Path):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sciops" / "etags"
        self.path = base / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".json")
        self._lock = threading.Lock()
        self.dirty = False
        try:
            self.data: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, rel: str, entry: Entry, shape: int | None) -> str | None:
        rec = self.data.get(rel)
        if rec and rec[0] == entry.size and rec[1] == entry.mtime_ns:
            return rec[2].get(str(shape or 0))
        return None

    def put(self, rel: str, size: int, mtime_ns: int, shape: int | None, etag: str) -> None:
        with self._lock:
            rec = self.data.get(rel)
            if not rec or rec[0] != size or rec[1] != mtime_ns:
                rec = self.data[rel] = [size, mtime_ns, {}]
            rec[2][str(shape or 0)] = etag
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            with self._lock:
                tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:  # a cache that cannot be written only costs speed
            log.warning("could not save the checksum cache %s: %s", self.path, exc)


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


# -- the two kinds of tree -------------------------------------------------------------------
class LocalTree:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.cache = EtagCache(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def path(self, rel: str) -> Path:
        return self.root / safe_rel(rel)

    def list(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, Entry]:
        """Every file (``include``/``exclude`` as in :func:`sync`; top-level folders they rule out are not walked)."""
        out: dict[str, Entry] = {}
        if not self.root.is_dir():
            return out
        base = str(self.root)
        real_base = os.path.realpath(base)
        top = _top_level(include, exclude)
        outside: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            if top is not None and dirpath == base:
                dirnames[:] = [d for d in dirnames if top(d)]
            dirnames.sort()
            for name in filenames:
                if name.endswith(PARTIAL_SUFFIX):  # an unfinished download
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, base).replace(os.sep, "/")
                # a file symlink is synced only if it stays in the tree: a link to ~/.ssh/id_rsa or
                # airflow.cfg must not be copied into a storage root that others read
                if os.path.islink(full) and not os.path.realpath(full).startswith(real_base + os.sep):
                    outside.append(rel)
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                if _selected(rel, include, exclude):
                    out[rel] = Entry(st.st_size, None, st.st_mtime_ns)
        if outside:
            log.warning("%s: skipped %d symlink(s) leading outside the folder (not synced): %s", base, len(outside),
                        ", ".join(outside[:10]))
        return out

    def etag(self, rel: str, entry: Entry, shape: int | None) -> str:
        cached = self.cache.get(rel, entry, shape)
        if cached:
            return cached
        etag = file_etag(self.path(rel), shape)
        self.cache.put(rel, entry.size, entry.mtime_ns, shape, etag)
        return etag


class S3Tree:
    def __init__(self, client: S3Client, prefix: str):
        self.client = client
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def __str__(self) -> str:
        return f"s3://{self.client.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return self.prefix + safe_rel(rel)

    def list(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, Entry]:
        """Every object (``include``/``exclude`` as in :func:`sync`). When they rule out top-level
        folders (a project's ``output/`` with every past run in it), one delimiter listing finds the
        top level and only the wanted folders are listed."""
        top = _top_level(include, exclude)
        if top is None:
            objs: Iterable = self.client.list(self.prefix)
        else:
            files, folders = self.client.level(self.prefix)
            wanted = [f for f in folders if top(f[len(self.prefix):].rstrip("/"))]
            objs = [*files, *(o for f in wanted for o in self.client.list(f))]
        out = {}
        for obj in objs:
            rel = obj.key[len(self.prefix):]
            if not rel or rel.endswith("/"):  # "folder" markers made by consoles
                continue
            if _selected(rel, include, exclude):
                out[rel] = Entry(obj.size, obj.etag)
        return out


# -- the engine ------------------------------------------------------------------------------
def _top_level(include: Iterable[str] | None, exclude: Iterable[str] | None) -> Callable[[str], bool] | None:
    """Which top-level folders can hold a selected file; ``None`` when every one can."""
    inc = None if include is None else {p.strip("/").split("/")[0] for p in include}
    exc = {p.strip("/") for p in exclude or () if "/" not in p.strip("/")}
    if inc is None and not exc:
        return None
    return lambda name: (inc is None or name in inc) and name not in exc


def _selected(rel: str, include: Iterable[str] | None, exclude: Iterable[str] | None) -> bool:
    """``include``/``exclude``: top-level names (``input``, ``project.yaml``) or path prefixes."""
    def hit(patterns):
        return any(rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in patterns)
    if include is not None and not hit(include):
        return False
    return not (exclude and hit(exclude))


def sync(src: LocalTree | S3Tree, dst: LocalTree | S3Tree, *, delete: bool = False, workers: int = 16,
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
    direction = "up" if isinstance(dst, S3Tree) else "down" if isinstance(src, S3Tree) else "copy"
    label = label or f"sync {direction} {src} -> {dst}"
    emit = emit or log.info
    t0 = time.monotonic()
    stats = SyncStats(direction, str(src), str(dst))
    with ThreadPoolExecutor(2) as pool:  # list both sides at once
        fs = pool.submit(src.list, include, exclude) if source is None else None
        fd = pool.submit(dst.list, include, exclude) if dest is None else None
        source, dest = (fs.result() if fs else source), (fd.result() if fd else dest)
    stats.dest_state = dest
    source = {rel: e for rel, e in source.items() if _selected(rel, include, exclude)}
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
    doomed = sorted(rel for rel in set(dest) - set(source) if _selected(rel, include, exclude)) if delete else []
    if (todo or doomed) and before_write is not None:
        before_write()
    total = sum(source[r].size for r in todo)
    progress = Progress(label, len(todo), total, progress_seconds, emit)
    lock = threading.Lock()

    def one(rel: str) -> None:
        reused, resumed, etag = _transfer(src, dst, rel, source[rel], progress)
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
                _delete(dst, rel)
                stats.deleted += 1
                stats.deleted_paths.append(rel)
    finally:
        for tree in (src, dst):
            if isinstance(tree, LocalTree):
                tree.cache.save()
    stats.seconds = round(time.monotonic() - t0, 3)
    emit(progress.line() + f" (done in {stats.seconds:.1f} s; {stats.skipped} unchanged skipped"
         + (f", {stats.deleted} deleted" if delete else "") + ")")
    if errors:
        raise StorageError(f"{label}: {len(errors)} of {len(todo)} file(s) failed (run the sync again to resume): "
                           + "; ".join(errors[:5]))
    return stats


def _same_content(src, dst, rel: str, e: Entry, d: Entry) -> bool:
    if isinstance(src, LocalTree) and isinstance(dst, S3Tree):
        return src.etag(rel, e, etag_shape(d.etag, e.size)) == d.etag
    if isinstance(src, S3Tree) and isinstance(dst, LocalTree):
        return dst.etag(rel, d, etag_shape(e.etag, e.size)) == e.etag
    if isinstance(src, LocalTree) and isinstance(dst, LocalTree):
        return src.etag(rel, e, None) == dst.etag(rel, d, None)
    raise StorageError("S3 to S3 sync is not supported; sync through a folder")


def _delete(dst, rel: str) -> None:
    if isinstance(dst, S3Tree):
        dst.client.delete(dst.key(rel))
    else:
        dst.path(rel).unlink(missing_ok=True)


def _transfer(src, dst, rel: str, e: Entry, progress: Progress) -> tuple[int, int, str | None]:
    """Copy one file; returns (multipart parts reused, bytes resumed, the new object's ETag if uploaded)."""
    if isinstance(dst, S3Tree):
        return _upload(src, dst, rel, e, progress)
    target = dst.path(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, S3Tree):
        return 0, _download(src, dst, rel, e, target, progress), None
    tmp = target.with_name(target.name + PARTIAL_SUFFIX)
    shutil.copyfile(src.path(rel), tmp)
    os.replace(tmp, target)
    st = target.stat()
    dst.cache.put(rel, st.st_size, st.st_mtime_ns, None, src.etag(rel, e, None))
    progress.add(e.size)
    return 0, 0, None


def _upload(src: LocalTree, dst: S3Tree, rel: str, e: Entry, progress: Progress) -> tuple[int, int, str | None]:
    path, key = src.path(rel), dst.key(rel)
    client = dst.client
    if e.size <= MULTIPART_THRESHOLD:
        etag = client.put(key, lambda: open(path, "rb"), e.size)
        if etag and "-" not in etag:
            src.cache.put(rel, e.size, e.mtime_ns, None, etag)
        progress.add(e.size)
        return 0, 0, etag or None
    parts = -(-e.size // PART_SIZE)
    done: dict[int, tuple[int, str]] = {}
    upload_id = None
    for candidate in reversed(client.list_uploads(key)):  # newest unfinished upload of this key first
        upload_id, done = candidate, client.list_parts(key, candidate)
        break
    if upload_id is None:
        upload_id = client.create_multipart(key)
    etags, reused = [], 0
    with open(path, "rb") as fh:
        for number in range(1, parts + 1):
            data = fh.read(PART_SIZE)
            md5 = hashlib.md5(data).hexdigest()
            have = done.get(number)
            if have and have[0] == len(data) and have[1] == md5:
                reused += 1
                etags.append(md5)
            else:
                etags.append(client.upload_part(key, upload_id, number, data, len(data)) or md5)
            progress.add(len(data))
    etag = client.complete_multipart(key, upload_id, etags)
    if etag:
        src.cache.put(rel, e.size, e.mtime_ns, PART_SIZE, etag)
    return reused, 0, etag or None


def _download(src: S3Tree, dst: LocalTree, rel: str, e: Entry, target: Path, progress: Progress) -> int:
    tmp = target.with_name(target.name + PARTIAL_SUFFIX)
    start = tmp.stat().st_size if tmp.exists() else 0
    if start > e.size:
        start = 0
    resumed = start
    with open(tmp, "ab" if start else "wb") as fh:
        if start < e.size or e.size == 0:
            counting = _Counting(fh, progress)
            if start:
                progress.add(start)
            src.client.get_to(src.key(rel), counting, start=start)
    size = tmp.stat().st_size
    if size != e.size:
        raise StorageError(f"download of {rel} is {size} bytes, expected {e.size}; run the sync again")
    shape = etag_shape(e.etag, e.size)
    if e.etag and resumed and file_etag(tmp, shape) != e.etag:
        # a resumed file is checked whole: the object may have changed between the two runs
        tmp.unlink()
        raise StorageError(f"{rel}: the resumed download does not match the object's checksum; run the sync again")
    os.replace(tmp, target)
    st = target.stat()
    if e.etag:
        dst.cache.put(rel, st.st_size, st.st_mtime_ns, shape, e.etag)
    return resumed


class _Counting:
    def __init__(self, fh, progress: Progress):
        self.fh, self.progress = fh, progress

    def write(self, block: bytes) -> None:
        self.fh.write(block)
        self.progress.add(len(block))


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
        from sciops.s3 import S3RequestError

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
    tree, label, exclude = storage.tree(project), f"sync up {project}", ["output"]
    if not isinstance(tree, S3Tree):
        return sync(LocalTree(local), tree, delete=delete, exclude=exclude, label=label, **kw)
    manifest = SyncManifest(storage, project)
    manifest.read()
    known = None if (verify or delete) else manifest.trusted()
    stats = sync(LocalTree(local), tree, delete=delete, exclude=exclude, label=label,
                 dest=known["objects"] if known else None, before_write=manifest.mark_incomplete, **kw)
    if known:
        stats.destination_from = f"sync manifest of {known.get('written')} by {known.get('by')}"
    manifest.update(stats, keep=lambda rel: _selected(rel, None, exclude))
    return stats


def sync_down(storage, project: str, run_id: str, local_dir: Path | str, **kw) -> SyncStats:
    """``<root>/<project>/output/<run_id>/`` → ``<local_dir>/output/<run_id>/``; nothing else is touched."""
    dest = Path(local_dir).expanduser().resolve() / "output" / run_id
    return sync(storage.tree(project, "output", run_id), LocalTree(dest), label=f"sync down {project}/{run_id}", **kw)


def stage_in(storage, project: str, workspace: Path | str, **kw) -> SyncStats:
    """The project's ``input/ src/ bin/ project.yaml`` → the run's working copy (this machine)."""
    from sciops.storage import PROJECT_PARTS

    return sync(storage.tree(project), LocalTree(workspace), include=PROJECT_PARTS,
                label=f"stage in {project}", **kw)


def stage_out(storage, project: str, run_id: str, run_dir: Path | str, **kw) -> SyncStats:
    """The run folder → ``<root>/<project>/output/<run_id>/``: the only prefix a run writes."""
    return sync(LocalTree(run_dir), storage.tree(project, "output", run_id), label=f"stage out {project}/{run_id}",
                **kw)
