"""The storage root that holds every project: a local folder or ``s3://bucket[/prefix]``.

One abstraction for the DAG and the ``sciops`` command (``sciops sync``, ``results``, ``logs``, ``ls``):

- ``LocalStorage``: a folder on this machine (the embedded default) or an NFS mount the
  cluster shares. Runs work in the project folder itself.
- ``S3Storage``: a bucket (and prefix) reached through an Airflow AWS connection
  (``aws_conn_id``; an ``endpoint_url`` in its extras reaches S3-compatible stores), or, for the
  ``sciops`` command on a laptop, through the AWS SDK's own credential chain (a profile, SSO...:
  :mod:`sciops.storage.credentials`). Runs work in a copy under the work root
  (``SCIOPS_WORK_ROOT``), staged in and out per run. Nothing here creates a bucket.

Every key or path handed out is checked to stay inside the root; writes of a run are
confined to its own ``<project>/output/<run_id>/`` prefix.
"""
from __future__ import annotations

import logging
import posixpath
import re
import urllib.parse
from pathlib import Path
from sciops.errors import ConfigError, StorageError
from sciops.run.names import SAFE_NAME
from sciops.settings import setting
from sciops.storage.credentials import FromAwsChain, FromConnection
from sciops.storage.s3 import CREDENTIAL_CODES, EndpointError, S3Client, S3RequestError
from sciops.storage.trees import LocalTree, S3Tree

log = logging.getLogger(__name__)

#: What a run needs of a project; ``output/`` is never synced up nor staged in.
PROJECT_PARTS = ("input", "src", "bin", "project.yaml")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def default_root() -> str:
    return setting("SCIOPS_STORAGE_ROOT")


def work_root() -> Path:
    """Where runs of S3 projects keep their working copy (the cluster must see it too)."""
    return Path(setting("SCIOPS_WORK_ROOT")).expanduser().resolve()


def check_key_part(part: str, what: str = "path") -> str:
    """A relative POSIX path with no ``..``, no absolute start, no empty segment."""
    if not isinstance(part, str) or not part or part.startswith("/") or "\x00" in part or "\\" in part:
        raise StorageError(f"{what} {part!r} is not a relative path inside the storage root")
    segs = part.strip("/").split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise StorageError(f"{what} {part!r} leaves the storage root ('..', '.' or an empty segment)")
    return "/".join(segs)


class LocalStorage:
    """A storage root that is a folder on this machine (or an NFS mount the cluster shares).

    :param root: ``file:///abs/path`` or ``/abs/path``.
    """

    scheme = "file"
    is_local = True

    def __init__(self, root: str):
        path = root.removeprefix("file://")
        if not path.startswith(("/", "~")):
            raise StorageError(f"storage root {root!r} is not an absolute folder path; give e.g. /data/projects "
                               "or s3://bucket/prefix")
        self.root = Path(path).expanduser().resolve()
        self.url = str(self.root)

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
            raise StorageError(f"storage root {self.root} does not exist; create it or set SCIOPS_STORAGE_ROOT")

    def workspace(self, project: str) -> Path:
        """Where runs of ``project`` work: the project folder itself."""
        return self.path(check_key_part(project, "project"))

    def projects(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def runs(self, project: str) -> list[str]:
        """Run folders (dot-folders are not runs)."""
        base = self.path(check_key_part(project, "project"), "output")
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if base.is_dir() else []

    def exists(self, *parts: str) -> bool:
        return self.path(*[check_key_part(p) for p in parts]).is_file()

    def read_bytes(self, *parts: str) -> bytes:
        return self.path(*[check_key_part(p) for p in parts]).read_bytes()

    def write_bytes(self, *parts: str, data: bytes) -> str:
        """Write a file under the root (atomically: a reader never sees half of it, no temp file stays behind;
        a full disk is a StorageError naming the path and the bytes free)."""
        from sciops.run.project import write_atomic

        return str(write_atomic(self.path(*[check_key_part(p) for p in parts]), data))

    def tree(self, *parts: str):
        return LocalTree(self.path(*[check_key_part(p) for p in parts]))


class S3Storage:
    """``s3://bucket[/prefix]`` through an Airflow AWS connection or the AWS credential chain.

    :param conn_id: the Airflow connection (``aws`` type; default ``SCIOPS_AWS_CONN_ID``).
    :param credentials: where the credentials come from instead (a
        :class:`~sciops.storage.credentials.FromAwsChain`: the ``sciops`` command with an AWS profile).
        Credentials are resolved on first use and never logged.
    """

    scheme = "s3"
    is_local = False

    def __init__(self, url: str, conn_id: str | None = None, credentials: FromConnection | FromAwsChain | None = None):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "s3" or not u.netloc:
            raise StorageError(f"storage root {url!r}: write it as s3://bucket or s3://bucket/prefix")
        if not BUCKET.match(u.netloc):
            raise StorageError(f"storage root {url!r}: {u.netloc!r} is not a valid bucket name "
                               "(3-63 lower-case letters, digits, dots, hyphens)")
        self.bucket = u.netloc
        self.prefix = check_key_part(u.path.strip("/"), "storage root prefix") if u.path.strip("/") else ""
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.source = credentials or FromConnection(conn_id or setting("SCIOPS_AWS_CONN_ID"))
        self.conn_id = getattr(self.source, "conn_id", None)   # None: the AWS credential chain
        self._client = None

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, {self.source})"

    @property
    def client(self):
        if self._client is None:
            creds, region, endpoint = self.source.resolve()
            self._client = S3Client(self.bucket, creds, region, endpoint)
        return self._client

    @property
    def endpoint_url(self) -> str | None:
        return self.client.endpoint_url

    @property
    def region(self) -> str:
        return self.client.region

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the root; ``..`` and absolute parts refused."""
        rel = "/".join(check_key_part(p) for p in parts)
        return posixpath.join(self.prefix, rel) if self.prefix else rel

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def check(self) -> None:
        """One listing of nothing: reachable, the bucket exists, the credentials are accepted and may list it.
        Cheap; done in ``validate`` and by the ``sciops`` command. Each failure is a ConfigError naming the
        missing thing and its fix; nothing is created."""
        src, bucket = self.source, self.bucket
        try:
            self.client.head_bucket()
        except EndpointError as exc:
            raise ConfigError([("storage_root", f"{exc}; is the endpoint up? {src.endpoint_fix()}")]) from None
        except S3RequestError as exc:
            where = self.client.endpoint_url or f"S3 in {self.client.region}"
            if exc.status == 404:
                make = f"aws s3 mb s3://{bucket}{src.cli_flags()}"
                raise ConfigError([("storage_root", f"bucket {bucket!r} does not exist at {where}; SciOps creates "
                                                    f"none: create it (`{make}`) or fix the storage root")]) from None
            if exc.code in CREDENTIAL_CODES or exc.status == 401:
                raise ConfigError([(src.field, f"the credentials of {src} were refused for bucket {bucket!r} "
                                               f"({exc.status} {exc.code}); {src.refused_fix()}")]) from None
            if exc.status == 403:
                raise ConfigError([(src.field, f"{src} may not list bucket {bucket!r} ({exc.status} {exc.code}): "
                                               f"its identity needs s3:ListBucket on arn:aws:s3:::{bucket} and "
                                               f"s3:GetObject, s3:PutObject on arn:aws:s3:::{self.uri('*')[5:]} "
                                               "(ask the bucket's admin; deployment.md, \"A bucket\")")]) from None
            raise ConfigError([("storage_root", str(exc))]) from None

    def workspace(self, project: str) -> Path:
        return work_root() / check_key_part(project, "project")

    def projects(self) -> list[str]:
        """Folders with a project's name (not ``.sciops/``, where sync up keeps its manifests)."""
        return [n for n in self.client.folders(self.prefix + "/" if self.prefix else "") if SAFE_NAME.match(n)]

    def runs(self, project: str) -> list[str]:
        """Run folders (dot-folders are not runs)."""
        return [n for n in self.client.folders(self.key(project, "output") + "/") if not n.startswith(".")]

    def tree(self, *parts: str):
        return S3Tree(self.client, self.key(*parts))

    def exists(self, *parts: str) -> bool:
        return self.client.head(self.key(*parts)) is not None

    def read_bytes(self, *parts: str) -> bytes:
        return self.client.get_bytes(self.key(*parts))

    def write_bytes(self, *parts: str, data: bytes) -> str:
        key = self.key(*parts)
        self.client.put(key, data, len(data))
        return f"s3://{self.bucket}/{key}"

    def put_run_file(self, project: str, run_id: str, name: str, data: bytes) -> str:
        """Write one file of a run: only ever under ``<project>/output/<run_id>/``."""
        return self.write_bytes(project, "output", run_id, name, data=data)


def get_storage(url: str | None = None, conn_id: str | None = None,
                credentials: FromConnection | FromAwsChain | None = None) -> LocalStorage | S3Storage:
    url = url or default_root()
    if url.startswith("s3://"):
        return S3Storage(url, conn_id, credentials)
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"storage root {url!r}: use s3://bucket[/prefix] or a local folder path")
    return LocalStorage(url)
