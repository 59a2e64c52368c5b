"""The two kinds of tree a sync runs between, behind one interface: a local folder and an S3 prefix.

:mod:`sciops.storage.sync` plans and runs a sync over :class:`Tree` objects and never asks which kind
it holds; :mod:`sciops.storage.root` hands out trees. Each tree says what it holds
(:meth:`Tree.list`), the checksum of an entry in the form of S3's ETag (:meth:`Tree.checksum`),
its content MD5 where it can tell (:meth:`Tree.md5`), and takes a file from another tree
(:meth:`Tree.receive`).

S3's ETag is the MD5 of an object only for single-part uploads without SSE-KMS; a multipart
upload's is the MD5 of its parts' MD5s with ``-N`` (reproducible when the part size is known),
and an SSE-KMS object's is neither. So an upload stores the file's MD5 with the object where it has it
(user metadata ``sciops-md5``), the local side records the MD5 of every object it sent or fetched
(the checksum cache's ``objects``), and a comparison that neither settles asks S3 for the
stored MD5 (one HEAD: an SSE-KMS object this machine has not seen, or a file that differs
from an object it did not send).

A multipart upload checks its first part's ETag against that part's MD5. Where they agree (any
bucket without SSE-KMS) the object's ETag is the file's multipart ETag for SciOps' part size, which
any machine can recompute: it goes into the checksum cache (a no-op resync reads no file) and no
MD5 of the whole file is computed. Where they differ (SSE-KMS) the file's MD5 is computed while the
other parts go out and stored after the upload completes as the object tag ``sciops-md5`` (one
PutObjectTagging; metadata is fixed when an upload starts and cannot be added later without
copying the object). :meth:`S3Tree.md5` reads the metadata, then the tag. A bucket policy that
denies tagging costs only this: another machine, on an SSE-KMS bucket, sends or fetches that file
once more. Computing that MD5 on every upload cost a core-second per 0.7 GB, which on the testbed
(``bench/bench_scale.py --parts sync``: the client shares two cores with moto_server) was time
taken from the server.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from sciops.errors import StorageError
from sciops.storage.s3 import S3Client, part_crc32

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024          # the AWS CLI's default multipart chunk size, too
MULTIPART_THRESHOLD = PART_SIZE      # larger files go in parts
MAX_PARTS = 10_000                   # S3's limit per upload: a larger file gets larger parts
PARTIAL_SUFFIX = ".sciops-part"
MiB = 1024 * 1024
#: Parts of one file uploaded at once (the AWS CLI sends 10 requests at once), and parts in flight
#: across every upload of the process: memory stays under PARTS_IN_FLIGHT × part size (128 MiB at
#: 8 MiB parts) whatever the files' sizes and however many the sync sends at once.
PART_WORKERS = 8
PARTS_IN_FLIGHT = 16
_in_flight = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
#: The user metadata an upload stores the file's MD5 in (``x-amz-meta-sciops-md5``).
MD5_META = "sciops-md5"


@dataclass
class Entry:
    size: int
    etag: str | None = None          # S3's ETag; None for a local file not hashed yet
    mtime_ns: int | None = None


def part_size(size: int) -> int:
    """The part size of an upload of ``size`` bytes: 8 MiB, larger (whole MiB) past 10,000 parts."""
    return max(PART_SIZE, -(-size // MAX_PARTS // MiB) * MiB)


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
    """What this machine knows of a local folder's files, so that a no-op resync reads no file.

    ``files``: each file's checksums (its MD5, its multipart ETag per part size), keyed by
    (size, mtime). ``objects``: for each file, the ETags of objects this machine sent or
    fetched and the MD5 of their content, kept when the file changes: it tells an SSE-KMS
    object (whose ETag is not its MD5) from the file without asking S3, and tells that the file
    changed since. Kept in ``$XDG_CACHE_HOME/sciops/checksums/`` (one file per local folder),
    never in the folder itself.
    """

    VERSION = 2

    def __init__(self, root: Path):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sciops" / "checksums"
        self.path = base / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".json")
        self._lock = threading.Lock()
        self.dirty = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != self.VERSION:
                raise ValueError("another version")
        except (OSError, ValueError, AttributeError):
            data = {"version": self.VERSION, "files": {}, "objects": {}}
        self.files: dict[str, list] = data["files"]
        self.objects: dict[str, dict[str, str]] = data["objects"]

    def get(self, rel: str, entry: Entry, shape: int | None) -> str | None:
        rec = self.files.get(rel)
        if rec and rec[0] == entry.size and rec[1] == entry.mtime_ns:
            return rec[2].get(str(shape or 0))
        return None

    def put(self, rel: str, size: int, mtime_ns: int, shape: int | None, etag: str) -> None:
        with self._lock:
            rec = self.files.get(rel)
            if not rec or rec[0] != size or rec[1] != mtime_ns:
                rec = self.files[rel] = [size, mtime_ns, {}]
            rec[2][str(shape or 0)] = etag
            self.dirty = True

    def object_md5(self, rel: str, etag: str) -> str | None:
        return self.objects.get(rel, {}).get(etag)

    def record_object(self, rel: str, etag: str, md5: str) -> None:
        with self._lock:
            known = self.objects.setdefault(rel, {})
            if known.get(etag) != md5:
                known[etag] = md5
                while len(known) > 4:   # the last few: a file sent to a few buckets, or a few versions
                    known.pop(next(iter(known)))
                self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            with self._lock:
                tmp.write_text(json.dumps({"version": self.VERSION, "files": self.files,
                                           "objects": self.objects}))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:  # a cache that cannot be written only costs speed
            log.warning("could not save the checksum cache %s: %s", self.path, exc)


class Progress:
    """What a tree reports a transfer's bytes to (``sciops.storage.sync.Progress``)."""

    def add(self, nbytes: int, files: int = 0) -> None: ...


class Tree(ABC):
    #: Remote (S3) or on this machine: only for the direction a sync reports.
    is_remote = False

    @abstractmethod
    def list(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, Entry]:
        """Every file (``include``/``exclude``: top-level names or path prefixes)."""

    @abstractmethod
    def checksum(self, rel: str, entry: Entry, shape: int | None) -> str | None:
        """The content's checksum as S3's ETag of it would read (``shape``: the part size, None = whole)."""

    @abstractmethod
    def md5(self, rel: str, entry: Entry) -> str | None:
        """The content's MD5, when the tree can tell it."""

    def object_md5(self, rel: str, etag: str | None) -> str | None:
        """The content MD5 of the object with ``etag``, as this machine recorded it when it sent or fetched it."""
        return None

    def known_md5(self, rel: str, entry: Entry) -> str | None:
        """The content's MD5 when the tree has it without reading the file (a local tree's cache)."""
        return None

    def learned(self, rel: str, entry: Entry, shape: int | None, checksum: str) -> None:
        """The content's checksum (as :meth:`checksum`), learnt while the file was sent: kept where the tree
        keeps them."""

    def remember(self, rel: str, etag: str | None, md5: str | None) -> None:
        """The object with ``etag`` holds content with this MD5 (this machine sent or fetched it)."""

    def local_path(self, rel: str) -> Path | None:
        """The file on this machine, if it is one."""
        return None

    @abstractmethod
    def read_into(self, rel: str, fh, start: int = 0) -> None:
        """Write the file's bytes from ``start`` into an open binary file."""

    @abstractmethod
    def receive(self, src: Tree, rel: str, entry: Entry, progress: Progress) -> tuple[int, int, str | None]:
        """Make ``rel`` here a copy of ``src``'s: (multipart parts reused, bytes resumed, new ETag if any)."""

    @abstractmethod
    def delete(self, rel: str) -> None: ...

    def save(self) -> None:
        """Keep what was learnt (the checksum cache)."""


class LocalTree(Tree):
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.cache = EtagCache(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def path(self, rel: str) -> Path:
        return self.root / safe_rel(rel)

    def list(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, Entry]:
        """Every file (``include``/``exclude`` as in :func:`sync`; top-level folders they rule out are not walked).

        Walked with ``os.scandir`` (a file's type comes with its name, one ``stat`` a file) and names joined as
        strings: ``os.walk`` with ``relpath``/``islink``/``stat`` per file took 0.22 s for validate's 20,000
        images here, this 0.09 s (medians of 3). Folders are walked as ``os.walk`` does (top-down, sorted,
        links to folders not followed, unreadable ones skipped).
        """
        out: dict[str, Entry] = {}
        if not self.root.is_dir():
            return out
        base = str(self.root)
        real_base = os.path.realpath(base)
        top = top_level(include, exclude)
        outside: list[str] = []

        def walk(folder: str, prefix: str) -> None:
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                return
            subdirs = []
            for e in entries:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not e.is_symlink() and (top is None or prefix or top(e.name)):
                        subdirs.append(e.name)
                    continue
                if e.name.endswith(PARTIAL_SUFFIX):  # an unfinished download
                    continue
                rel = prefix + e.name
                # a file symlink is synced only if it stays in the tree: a link to ~/.ssh/id_rsa or
                # airflow.cfg must not be copied into a storage root that others read
                if e.is_symlink() and not os.path.realpath(e.path).startswith(real_base + os.sep):
                    outside.append(rel)
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue
                if selected(rel, include, exclude):
                    out[rel] = Entry(st.st_size, None, st.st_mtime_ns)
            for name in sorted(subdirs):
                walk(os.path.join(folder, name), prefix + name + "/")

        walk(base, "")
        if outside:
            log.warning("%s: skipped %d symlink(s) leading outside the folder (not synced): %s", base, len(outside),
                        ", ".join(outside[:10]))
        return out

    def checksum(self, rel: str, entry: Entry, shape: int | None) -> str:
        cached = self.cache.get(rel, entry, shape)
        if cached:
            return cached
        etag = file_etag(self.path(rel), shape)
        self.cache.put(rel, entry.size, entry.mtime_ns, shape, etag)
        return etag


    def md5(self, rel: str, entry: Entry) -> str:
        return self.checksum(rel, entry, None)

    def known_md5(self, rel: str, entry: Entry) -> str | None:
        return self.cache.get(rel, entry, None)

    def learned(self, rel: str, entry: Entry, shape: int | None, checksum: str) -> None:
        self.cache.put(rel, entry.size, entry.mtime_ns, shape, checksum)

    def object_md5(self, rel: str, etag: str | None) -> str | None:
        return self.cache.object_md5(rel, etag) if etag else None

    def remember(self, rel: str, etag: str | None, md5: str | None) -> None:
        if etag and md5:
            self.cache.record_object(rel, etag, md5)

    def local_path(self, rel: str) -> Path:
        return self.path(rel)

    def read_into(self, rel: str, fh, start: int = 0) -> None:
        with open(self.path(rel), "rb") as src:
            src.seek(start)
            shutil.copyfileobj(src, fh, MiB)

    def receive(self, src: Tree, rel: str, e: Entry, progress: Progress) -> tuple[int, int, str | None]:
        """A copy (another folder) or a download (S3), resumed from an unfinished ``.sciops-part`` file."""
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + PARTIAL_SUFFIX)
        there = src.local_path(rel)
        if there is not None:   # another folder on this machine: a plain copy
            shutil.copyfile(there, tmp)
            progress.add(e.size)
            resumed, md5 = 0, src.md5(rel, e)
        else:
            start = tmp.stat().st_size if tmp.exists() else 0
            if start > e.size:
                start = 0
            resumed = start
            digest = hashlib.md5()
            if start:
                with open(tmp, "rb") as done:
                    for block in iter(lambda: done.read(MiB), b""):
                        digest.update(block)
            with open(tmp, "ab" if start else "wb") as fh:
                if start < e.size or e.size == 0:
                    if start:
                        progress.add(start)
                    src.read_into(rel, _Counting(fh, progress, digest), start=start)
            size = tmp.stat().st_size
            if size != e.size:
                raise StorageError(f"download of {rel} is {size} bytes, expected {e.size}; run the sync again")
            md5 = digest.hexdigest()
            if resumed and not self._matches(tmp, md5, src, rel, e):
                # a resumed file is checked whole: the object may have changed between the two runs
                tmp.unlink()
                raise StorageError(f"{rel}: the resumed download does not match the object's checksum; run the "
                                   "sync again")
        os.replace(tmp, target)
        st = target.stat()
        self.cache.put(rel, st.st_size, st.st_mtime_ns, None, md5)
        self.remember(rel, e.etag, md5)
        return 0, resumed, None

    @staticmethod
    def _matches(path: Path, md5: str, src: Tree, rel: str, e: Entry) -> bool:
        if e.etag == md5 or (e.etag and "-" in e.etag and file_etag(path, etag_shape(e.etag, e.size)) == e.etag):
            return True
        return src.md5(rel, e) == md5   # an ETag that is not an MD5 (SSE-KMS): the MD5 stored with the object

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def save(self) -> None:
        self.cache.save()


class S3Tree(Tree):
    is_remote = True

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
        top = top_level(include, exclude)
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
            if selected(rel, include, exclude):
                out[rel] = Entry(obj.size, obj.etag)
        return out


    def checksum(self, rel: str, entry: Entry, shape: int | None) -> str | None:
        return entry.etag

    def md5(self, rel: str, entry: Entry) -> str | None:
        """The MD5 an upload by SciOps stored with the object (one HEAD; a multipart upload's may be in
        its tags, one more request); None for others' objects."""
        found = self.client.head(self.key(rel))
        if found is None:
            return None
        if MD5_META in found.meta or "-" not in (found.etag or entry.etag or ""):
            return found.meta.get(MD5_META)
        return self.client.get_tags(self.key(rel)).get(MD5_META)

    def read_into(self, rel: str, fh, start: int = 0) -> None:
        self.client.get_to(self.key(rel), fh, start=start)

    def receive(self, src: Tree, rel: str, e: Entry, progress: Progress) -> tuple[int, int, str | None]:
        """An upload of a local file, in parts past 8 MiB; an unfinished multipart upload is resumed."""
        path = src.local_path(rel)
        if path is None:
            raise StorageError("S3 to S3 sync is not supported; sync through a folder")
        key, client = self.key(rel), self.client
        if e.size <= MULTIPART_THRESHOLD:
            md5 = src.md5(rel, e)
            etag = client.put(key, lambda: open(path, "rb"), e.size, {MD5_META: md5})
            src.remember(rel, etag, md5)
            progress.add(e.size)
            return 0, 0, etag or None
        md5 = src.known_md5(rel, e)
        size = part_size(e.size)
        parts = -(-e.size // size)
        done: dict[int, tuple[int, str]] = {}
        upload_id, checked = None, True
        for candidate, checked in reversed(client.list_uploads(key)):  # newest unfinished upload first
            upload_id, done = candidate, client.list_parts(key, candidate)
            break
        if upload_id is None:
            upload_id, checked = client.create_multipart(key, {MD5_META: md5} if md5 else None), True
        fd = os.open(path, os.O_RDONLY)
        failed: list[BaseException] = []
        hashing: list[threading.Thread] = []
        found: list[str] = []
        plain: list[bool] = []

        def whole_md5() -> None:   # while the other parts go out; from the page cache, as a rule
            h = hashlib.md5()
            offset = 0
            while block := os.pread(fd, 8 * MiB, offset):
                h.update(block)
                offset += len(block)
            found.append(h.hexdigest())

        def one(number: int) -> tuple[str, str | None, bool]:
            with _in_flight:   # a part is read only when it can be sent: memory bounded, not per file
                if failed:
                    raise StorageError("another part of this upload failed")
                data = os.pread(fd, size, (number - 1) * size)
                have = done.get(number)
                crc = part_crc32(data) if checked else None
                try:
                    if have and have[0] == len(data) and have[1] == hashlib.md5(data).hexdigest():
                        plain.append(True)   # a part whose ETag is its MD5: so are the others
                        return have[1], crc, True
                    sent = client.upload_part(key, upload_id, number, data, len(data), checked=checked)
                    if number == 1:   # is a part's ETag its MD5 here? Then the object's ETag is the file's
                        plain.append(sent == hashlib.md5(data).hexdigest())
                        if md5 is None and not plain[-1]:   # no (SSE-KMS): the file's MD5 goes in a tag
                            hashing.append(threading.Thread(target=whole_md5, name="sciops-md5", daemon=True))
                            hashing[0].start()
                    return sent or hashlib.md5(data).hexdigest(), crc, False
                except BaseException as exc:
                    failed.append(exc)
                    raise
                finally:
                    progress.add(len(data))

        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(min(PART_WORKERS, parts), thread_name_prefix="sciops-part") as pool:
                answers = list(pool.map(one, range(1, parts + 1)))
        finally:
            for thread in hashing:
                thread.join()
            os.close(fd)
        reused = sum(1 for *_, was in answers if was)   # a part failed? the upload stays: run it again
        etag = client.complete_multipart(key, upload_id, [(etag, crc) for etag, crc, _ in answers])
        if found:
            md5 = found[0]
            src.learned(rel, e, None, md5)
            try:
                client.put_tags(key, {MD5_META: md5})
            except StorageError as exc:
                log.warning("%s: could not tag the object with its MD5 (%s); on an SSE-KMS bucket, another "
                            "machine will send or fetch it once more", key, exc)
        if etag and any(plain):   # the parts' ETags are their MD5s, so this one is the file's multipart ETag
            src.learned(rel, e, size, etag)   # with this part size (a no-op resync reads nothing); any machine
                                              # can check it: no MD5 needed in a tag
        src.remember(rel, etag, md5)
        return reused, 0, etag or None

    def delete(self, rel: str) -> None:
        self.client.delete(self.key(rel))


class _Counting:
    def __init__(self, fh, progress: Progress, digest):
        self.fh, self.progress, self.digest = fh, progress, digest

    def write(self, block: bytes) -> None:
        self.fh.write(block)
        self.digest.update(block)
        self.progress.add(len(block))


def top_level(include: Iterable[str] | None, exclude: Iterable[str] | None) -> Callable[[str], bool] | None:
    """Which top-level folders can hold a selected file; ``None`` when every one can."""
    inc = None if include is None else {p.strip("/").split("/")[0] for p in include}
    exc = {p.strip("/") for p in exclude or () if "/" not in p.strip("/")}
    if inc is None and not exc:
        return None
    return lambda name: (inc is None or name in inc) and name not in exc


def selected(rel: str, include: Iterable[str] | None, exclude: Iterable[str] | None) -> bool:
    """``include``/``exclude``: top-level names (``input``, ``project.yaml``) or path prefixes."""
    def hit(patterns):
        return any(rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in patterns)
    if include is not None and not hit(include):
        return False
    return not (exclude and hit(exclude))
