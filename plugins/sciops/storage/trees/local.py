"""A local folder as a sync tree."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from sciops.errors import StorageError
from sciops.storage.trees.base import (
    PARTIAL_SUFFIX,
    Counting,
    Entry,
    MiB,
    Progress,
    Tree,
    safe_rel,
    selected,
    top_level,
)
from sciops.storage.trees.etags import EtagCache, etag_shape, file_etag

log = logging.getLogger(__name__)


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
                    src.read_into(rel, Counting(fh, progress, digest), start=start)
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
