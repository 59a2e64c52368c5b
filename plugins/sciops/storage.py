"""The storage root that holds every project.

Now: a plain folder (``file://`` or a path; the embedded default). The S3 issue adds
an ``s3://bucket/prefix`` root behind the same interface. Every path handed out is
checked to stay inside the root.
"""
from __future__ import annotations

import os
from pathlib import Path

from sciops.errors import StorageError

ENV_ROOT = "SCIOPS_STORAGE_ROOT"


def default_root() -> str:
    return os.environ.get(ENV_ROOT) or str(Path.home() / "sciops-projects")


class LocalStorage:
    """A storage root that is a folder on this machine (or an NFS mount the cluster shares).

    :param root: ``file:///abs/path`` or ``/abs/path``.
    """

    scheme = "file"

    def __init__(self, root: str):
        path = root.removeprefix("file://")
        self.root = Path(path).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, *parts: str) -> Path:
        """``root/parts...``, refused if it would leave the root (``..``, absolute parts, symlinks)."""
        target = self.root.joinpath(*parts).resolve()
        if target != self.root and self.root not in target.parents:
            raise StorageError(f"path {'/'.join(parts)!r} is outside the storage root {self.root}")
        return target

    def check(self) -> None:
        """A cheap reachability check, done in ``validate``."""
        if not self.root.is_dir():
            raise StorageError(f"storage root {self.root} does not exist; create it or set {ENV_ROOT}")


def get_storage(url: str | None = None) -> LocalStorage:
    url = url or default_root()
    if url.startswith("s3://"):
        raise StorageError(f"storage root {url!r}: S3 storage is not built yet; use a local folder")
    return LocalStorage(url)
