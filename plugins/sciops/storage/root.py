"""The storage root that holds every project: a local folder or ``s3://bucket[/prefix]``.

One abstraction for the DAG and the ``sciops`` command (``sciops sync``, ``results``, ``logs``, ``ls``):

- ``LocalStorage``: a folder on this machine (the embedded default) or an NFS mount the
  cluster shares. Runs work in the project folder itself.
- ``S3Storage``: a bucket (and prefix) reached through an Airflow AWS connection
  (``aws_conn_id``; an ``endpoint_url`` in its extras reaches S3-compatible stores). Runs
  work in a copy under the work root (``SCIOPS_WORK_ROOT``), staged in and out per run.

Every key or path handed out is checked to stay inside the root; writes of a run are
confined to its own ``<project>/output/<run_id>/`` prefix.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import urllib.parse
from pathlib import Path
from typing import Any

from sciops.errors import ConfigError, StorageError
from sciops.run.names import SAFE_NAME
from sciops.settings import setting
from sciops.storage.s3 import CREDENTIAL_CODES, Credentials, EndpointError, S3Client, S3RequestError
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
    """``s3://bucket[/prefix]`` through an Airflow AWS connection.

    :param conn_id: the Airflow connection (``aws`` type). Credentials are resolved on first
        use and never logged.
    """

    scheme = "s3"
    is_local = False

    def __init__(self, url: str, conn_id: str | None = None):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "s3" or not u.netloc:
            raise StorageError(f"storage root {url!r}: write it as s3://bucket or s3://bucket/prefix")
        if not BUCKET.match(u.netloc):
            raise StorageError(f"storage root {url!r}: {u.netloc!r} is not a valid bucket name "
                               "(3-63 lower-case letters, digits, dots, hyphens)")
        self.bucket = u.netloc
        self.prefix = check_key_part(u.path.strip("/"), "storage root prefix") if u.path.strip("/") else ""
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.conn_id = conn_id or setting("SCIOPS_AWS_CONN_ID")
        self._client = None

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, conn_id={self.conn_id!r})"

    @property
    def client(self):
        if self._client is None:
            creds, region, endpoint = connection_credentials(self.conn_id)
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
        """HEAD the bucket: reachable, exists, credentials accepted. Cheap; done in ``validate``."""
        try:
            self.client.head_bucket()
        except EndpointError as exc:
            raise ConfigError([("storage_root", f"{exc}; is the endpoint up? Check the endpoint_url in the "
                                                f"extras of connection {self.conn_id!r}")]) from None
        except S3RequestError as exc:
            if exc.status == 404:
                raise ConfigError([("storage_root", f"bucket {self.bucket!r} does not exist at "
                                                    f"{self.client.endpoint_url or 'S3 in ' + self.client.region}; create it or fix the storage "
                                                    "root")]
                                  ) from None
            if exc.status in (401, 403) or exc.code in CREDENTIAL_CODES:
                raise ConfigError([("aws_conn_id", f"the credentials of connection {self.conn_id!r} were refused "
                                                   f"for bucket {self.bucket!r} ({exc.status} {exc.code}); fix the "
                                                   "connection's access key/secret or the bucket's policy")]
                                  ) from None
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


def get_storage(url: str | None = None, conn_id: str | None = None) -> LocalStorage | S3Storage:
    url = url or default_root()
    if url.startswith("s3://"):
        return S3Storage(url, conn_id)
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"storage root {url!r}: use s3://bucket[/prefix] or a local folder path")
    return LocalStorage(url)


# -- credentials from an Airflow connection --------------------------------------------------
def connection_credentials(conn_id: str):
    """(Credentials, region, endpoint_url) of an Airflow AWS connection.

    A connection given as ``AIRFLOW_CONN_<ID>`` with a key pair is read directly (the CLI
    stays fast); anything else (a connection in the metadata DB or a secrets backend, a role
    to assume, the instance profile) goes through the Amazon provider's ``AwsBaseHook``, and
    the S3 client signs with ``Credentials.current()``, which renews expiring keys.
    """
    env = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if env:
        parsed = _parse_env_connection(env)
        if parsed and parsed["login"] and parsed["password"] and not parsed["extra"].get("role_arn"):
            extra = parsed["extra"]
            return (Credentials(parsed["login"], parsed["password"], extra.get("aws_session_token")),
                    extra.get("region_name") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    extra.get("endpoint_url"))
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    try:
        hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
        session = hook.get_session()
        found = session.get_credentials()
    except Exception as exc:  # noqa: BLE001 - the provider raises many kinds; the message says which
        raise ConfigError([("aws_conn_id", f"connection {conn_id!r} cannot give AWS credentials "
                                           f"({type(exc).__name__}); check it in Admin > Connections")]) from None
    if found is None:
        raise ConfigError([("aws_conn_id", f"no AWS credentials: connection {conn_id!r} has none and there are none "
                                           "in the environment or instance profile; add a key pair to the "
                                           "connection")])
    frozen = found.get_frozen_credentials()
    region = hook.conn_config.region_name or session.region_name or "us-east-1"
    return (Credentials(frozen.access_key, frozen.secret_key, frozen.token, source=found), region,
            hook.conn_config.endpoint_url)


def _parse_env_connection(value: str) -> dict[str, Any] | None:
    """The JSON or URI form of ``AIRFLOW_CONN_<ID>`` (as Airflow documents them)."""
    value = value.strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            return None
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError:
                extra = {}
        return {"login": data.get("login"), "password": data.get("password"), "extra": extra}
    u = urllib.parse.urlsplit(value)
    extra = dict(urllib.parse.parse_qsl(u.query))
    if "__extra__" in extra:
        try:
            extra = json.loads(extra["__extra__"])
        except ValueError:
            extra = {}
    return {"login": urllib.parse.unquote(u.username or "") or None,
            "password": urllib.parse.unquote(u.password or "") or None, "extra": extra}
