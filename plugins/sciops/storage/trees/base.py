"""Trees: what a sync runs between, behind one interface (entries, part sizes, selection, the ABC).

See the package docstring for how checksums work across a folder and S3.
"""
from __future__ import annotations

import logging
import posixpath
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from sciops.errors import StorageError

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
parts_in_flight = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
#: The user metadata an upload stores the file's MD5 in (``x-amz-meta-sciops-md5``).
MD5_META = "sciops-md5"


@dataclass

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


class Counting:
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
