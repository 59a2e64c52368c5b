"""Checksums in the form of S3's ETag: a file's (single or multipart), an ETag's part size, the local cache."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from sciops.storage.trees.base import Entry, MiB, part_size_for

log = logging.getLogger(__name__)


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
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                tmp.write_text(json.dumps({"version": self.VERSION, "files": self.files,
                                           "objects": self.objects}))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:  # a cache that cannot be written only costs speed
            tmp.unlink(missing_ok=True)
            log.warning("could not save the checksum cache %s: %s", self.path, exc)
