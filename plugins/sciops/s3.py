"""The S3 calls the sync engine makes, on botocore (the client the AWS CLI and boto3 are built on).

botocore does what a hand-written client gets wrong: the addressing style per bucket and
endpoint (a dotted bucket name is addressed path-style over TLS, where a virtual host would
fail the certificate), the region redirect (a bucket in another region: botocore's
``S3RegionRedirector`` follows S3's 301/400 and caches the region), proxies
(``HTTPS_PROXY``), retries (standard mode: 5xx, throttling, dropped connections) and
credentials that renew themselves (an assumed role, the instance profile: the
``RefreshableCredentials`` the Amazon provider's session gives are the client's credentials,
renewed before they expire). The price is the client's start, ~1 s of CPU once per process
(import 0.8 s + 0.18 s for the client, measured on this machine), against syncs that take
minutes; :mod:`sciops.sync` (the planner, the ETag cache and the sync manifest) is what
makes a resync fast, and it is unchanged. Credentials are handed in by :mod:`sciops.storage`,
which gets them from an Airflow connection; they are never logged nor put in a message.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from sciops.errors import StorageError

log = logging.getLogger(__name__)

#: Error codes that mean "these credentials are not accepted", whatever the bucket.
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "AuthorizationHeaderMalformed"}
#: Parallel transfers share one client: its connection pool must hold them all.
POOL = 32
#: Tries of one call (botocore's standard retry mode: 5xx, throttling, dropped connections).
ATTEMPTS = 5


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = ""
    token: str | None = None
    #: botocore credentials that renew themselves (an assumed role, the instance profile): their
    #: keys expire within hours, and a long sync must not fail with ExpiredToken half-way.
    source: Any = field(default=None, compare=False)

    def __repr__(self) -> str:  # never show the secret, even in a traceback's locals
        return "Credentials(access_key=<hidden>, secret_key=<hidden>)"

    def current(self) -> "Credentials":
        """The keys to sign with now (``source`` refreshes them shortly before they expire)."""
        if self.source is None:
            return self
        frozen = self.source.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def botocore(self):
        """These credentials as botocore's (the renewing ones as they are)."""
        if self.source is not None:
            return self.source
        from botocore.credentials import Credentials as BotoCredentials

        return BotoCredentials(self.access_key, self.secret_key, self.token)


class S3RequestError(StorageError):
    """S3 answered with an error: ``status`` and ``code`` (e.g. 404 NoSuchBucket)."""

    def __init__(self, status: int, code: str, message: str, what: str):
        self.status, self.code = status, code
        super().__init__(f"{what}: S3 said {status} {code}: {message}")


class EndpointError(StorageError):
    """The endpoint could not be reached at all."""


@dataclass
class Obj:
    key: str
    size: int
    etag: str
    #: user metadata (``x-amz-meta-*``), from a HEAD only: listings do not carry it
    meta: dict[str, str] = field(default_factory=dict)


def _client(creds: Credentials, region: str, endpoint_url: str | None, timeout: float):
    import botocore.session
    from botocore.config import Config
    from botocore.credentials import CredentialProvider, CredentialResolver

    class Given(CredentialProvider):   # botocore's way to hand a session credentials that may renew
        METHOD = "sciops-airflow-connection"

        def load(self):
            return creds.botocore()

    session = botocore.session.Session()
    session.register_component("credential_provider", CredentialResolver([Given()]))
    config = Config(max_pool_connections=POOL, connect_timeout=timeout, read_timeout=timeout,
                    retries={"mode": "standard", "max_attempts": ATTEMPTS}, s3={"addressing_style": "auto"},
                    # the ETag (MD5) checks content; no second checksum computed per request (as aws s3 sync)
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return session.create_client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


class S3Client:
    """Calls against one bucket. Thread-safe (botocore clients are; one connection pool for all threads).

    :param endpoint_url: ``http(s)://host[:port]`` of an S3-compatible store; ``None`` = AWS.
    """

    def __init__(self, bucket: str, creds: Credentials, region: str = "us-east-1", endpoint_url: str | None = None,
                 timeout: float = 60.0):
        self.bucket, self.creds, self.region, self.timeout = bucket, creds, region or "us-east-1", timeout
        self.endpoint_url = endpoint_url
        self._made = threading.Lock()
        self._s3 = None

    @property
    def s3(self):
        """The botocore client, made on first use (most storage objects never make a call)."""
        with self._made:
            if self._s3 is None:
                self._s3 = _client(self.creds, self.region, self.endpoint_url, self.timeout)
        return self._s3

    def call(self, op: str, what: str, **params) -> dict[str, Any]:
        """One S3 call (botocore retries it); its errors as :class:`S3RequestError` / :class:`EndpointError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.s3, op)(Bucket=self.bucket, **params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            raise S3RequestError(status, err.get("Code") or str(status), err.get("Message") or "", what) from None
        except BotoCoreError as exc:
            where = self.endpoint_url or f"S3 in {self.region}"
            raise EndpointError(f"{what}: cannot reach {where} ({type(exc).__name__}: {exc})") from None

    # -- calls -----------------------------------------------------------------------------
    def head_bucket(self) -> None:
        self.call("head_bucket", f"bucket {self.bucket!r}")

    def create_bucket(self) -> None:
        args = {} if self.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.region}}
        self.call("create_bucket", f"create bucket {self.bucket!r}", **args)

    def _pages(self, what: str, **params) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            page = self.call("list_objects_v2", what, MaxKeys=1000, **params,
                             **({"ContinuationToken": token} if token else {}))
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    @staticmethod
    def _objs(page: dict[str, Any]) -> list[Obj]:
        return [Obj(c["Key"], int(c.get("Size") or 0), (c.get("ETag") or "").strip('"'))
                for c in page.get("Contents") or ()]

    def list(self, prefix: str = "") -> Iterator[Obj]:
        """Every object under ``prefix`` (ListObjectsV2, 1,000 a page)."""
        for page in self._pages(f"list s3://{self.bucket}/{prefix}", Prefix=prefix):
            yield from self._objs(page)

    def level(self, prefix: str = "") -> tuple[list[Obj], list[str]]:
        """One level under ``prefix`` (ListObjectsV2 with ``delimiter=/``): the objects right there,
        and the sub-prefixes (whole keys ending in ``/``), whose objects are not listed."""
        objs, prefixes = [], []
        for page in self._pages(f"list s3://{self.bucket}/{prefix}", Prefix=prefix, Delimiter="/"):
            objs += self._objs(page)
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes") or ()]
        return objs, prefixes

    def folders(self, prefix: str = "") -> list[str]:
        """The next path segment under ``prefix``: no object below it is listed."""
        return sorted(x for x in (p[len(prefix):].rstrip("/") for p in self.level(prefix)[1]) if x)

    def head(self, key: str) -> Obj | None:
        try:
            got = self.call("head_object", f"HEAD s3://{self.bucket}/{key}", Key=key)
        except S3RequestError as exc:
            if exc.status == 404:
                return None
            raise
        return Obj(key, int(got.get("ContentLength") or 0), (got.get("ETag") or "").strip('"'),
                   dict(got.get("Metadata") or {}))

    def get_bytes(self, key: str) -> bytes:
        return self._read(key, lambda body: body.read())

    def get_to(self, key: str, fh, start: int = 0) -> None:
        """Stream the object (from byte ``start``) into an open binary file."""
        def copy(body):
            for block in body.iter_chunks(1 << 20):
                fh.write(block)

        self._read(key, copy, **({"Range": f"bytes={start}-"} if start else {}))

    def _read(self, key: str, consume, **params):
        from botocore.exceptions import BotoCoreError

        what = f"GET s3://{self.bucket}/{key}"
        body = self.call("get_object", what, Key=key, **params)["Body"]
        try:
            return consume(body)
        except BotoCoreError as exc:   # the body broke off half-way
            raise EndpointError(f"{what}: the download broke off ({type(exc).__name__}: {exc})") from None
        finally:
            body.close()

    def put(self, key: str, body, length: int, meta: dict[str, str] | None = None) -> str:
        """PUT an object (bytes or a callable opening the file) with user metadata; returns its ETag."""
        fh = body() if callable(body) else body
        try:
            got = self.call("put_object", f"PUT s3://{self.bucket}/{key}", Key=key, Body=fh, ContentLength=length,
                            **({"Metadata": meta} if meta else {}))
        finally:
            if callable(body):
                fh.close()
        return (got.get("ETag") or "").strip('"')

    def delete(self, key: str) -> None:
        self.call("delete_object", f"DELETE s3://{self.bucket}/{key}", Key=key)

    # -- multipart -------------------------------------------------------------------------
    def create_multipart(self, key: str, meta: dict[str, str] | None = None) -> str:
        return self.call("create_multipart_upload", f"start multipart upload of {key}", Key=key,
                         **({"Metadata": meta} if meta else {}))["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body, length: int) -> str:
        got = self.call("upload_part", f"upload part {number} of {key}", Key=key, UploadId=upload_id,
                        PartNumber=number, Body=body, ContentLength=length)
        return (got.get("ETag") or "").strip('"')

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """Parts already uploaded: number → (size, etag)."""
        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = self.call("list_parts", f"list parts of {key}", Key=key, UploadId=upload_id,
                             PartNumberMarker=marker)
            for p in page.get("Parts") or ():
                parts[int(p["PartNumber"])] = (int(p.get("Size") or 0), (p.get("ETag") or "").strip('"'))
            if not page.get("IsTruncated"):
                return parts
            marker = int(page.get("NextPartNumberMarker") or max(parts))

    def list_uploads(self, key: str) -> list[str]:
        """Unfinished multipart uploads of exactly ``key``, oldest first."""
        page = self.call("list_multipart_uploads", f"list unfinished uploads of {key}", Prefix=key)
        return [u["UploadId"] for u in page.get("Uploads") or () if u.get("Key") == key]

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str:
        got = self.call("complete_multipart_upload", f"complete multipart upload of {key}", Key=key,
                        UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": i, "ETag": f'"{e}"'}
                                                                       for i, e in enumerate(etags, 1)]})
        return (got.get("ETag") or "").strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.call("abort_multipart_upload", f"abort multipart upload of {key}", Key=key, UploadId=upload_id)
