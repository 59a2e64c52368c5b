"""The S3 calls the sync engine makes, on maintained clients: obstore for objects, botocore for the rest.

obstore (Python bindings of the Rust ``object_store`` crate, maintained by the Apache Arrow
project) carries every call a sync makes per file: list, head, get (ranges, streamed), put,
delete. It starts in ~0.07 s (import 0.02 s + store 0.05 s) where botocore takes ~0.8 s (import
0.55 s + client 0.2 s, measured on this machine), and a sync up that finds 1 % of 5,000 files
changed is ~1.5 s in all: botocore's start alone put it over its goal (0.3× of ``aws s3
sync``, bench/bench_s3_sync.py). It keeps HTTP connections alive (5.9 ms per small PUT on the
testbed against 10 ms through botocore, which reconnected each time), retries, honours
proxies (``HTTPS_PROXY``) and takes credentials from a provider it calls again before they
expire (an assumed role, the instance profile).

botocore (the AWS CLI's client, already installed) is made only when needed: a multipart
upload (obstore cannot list an unfinished upload's parts, and a 50 GB upload that broke at
40 GB must resume, not restart), creating a bucket (tests, benchmarks), and finding a bucket's
region when S3 answers that it lives in another one (its ``S3RegionRedirector`` follows the
301; the object store is then remade for that region and the call made again).

Bucket names with dots are addressed path-style (a virtual host ``lab.images.s3...`` fails
TLS: S3's certificate covers one label). Credentials are handed in by :mod:`sciops.storage.root`,
which gets them from :mod:`sciops.storage.credentials` (an Airflow connection, or the AWS
credential chain); they are never logged nor put in a message.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sciops.errors import StorageError
from sciops.storage import s3_keys
from sciops.storage.credentials import Credentials  # noqa: F401 - the S3Client's, named here too

log = logging.getLogger(__name__)

#: Error codes that mean "these credentials are not accepted", whatever the bucket.
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "AuthorizationHeaderMalformed"}
#: Parallel transfers share one client: its connection pool must hold them all.
POOL = 32
#: Tries of one call (5xx, throttling, dropped connections are tried again).
ATTEMPTS = 5
#: The checksum each part of a multipart upload carries, as the AWS CLI sends them: S3 checks every
#: part against it, over HTTPS botocore sends it as a trailer and leaves the body unsigned instead of
#: SHA-256 hashing it (zlib's CRC32: ~3.9 GB/s here, SHA-256 1.7 GB/s, MD5 0.7 GB/s), and S3 (moto
#: too) then builds the object's checksum from the parts' CRC32s instead of reading the object again:
#: without it moto_server spent 2-3x the CPU of the AWS CLI's upload on the same 1 GB.
PART_CHECKSUM = "CRC32"
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def part_crc32(data: bytes) -> str:
    """A part's CRC32 as S3 writes it (base64 of the big-endian 4 bytes)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


#: The permission a call needs, by how its ``what`` begins (first match): named when S3 answers AccessDenied.
PERMISSIONS = (("list parts", "s3:ListMultipartUploadParts"), ("list unfinished", "s3:ListBucketMultipartUploads"),
               ("list", "s3:ListBucket"), ("bucket", "s3:ListBucket"), ("HEAD", "s3:GetObject"),
               ("GET", "s3:GetObject"), ("DELETE", "s3:DeleteObject"), ("abort", "s3:AbortMultipartUpload"),
               ("tag", "s3:PutObjectTagging"), ("read the tags", "s3:GetObjectTagging"),
               ("create bucket", "s3:CreateBucket"), ("", "s3:PutObject"))


class S3RequestError(StorageError):
    """S3 answered with an error: ``status`` and ``code`` (e.g. 404 NoSuchBucket); an AccessDenied names the
    permission the call needed."""

    def __init__(self, status: int, code: str, message: str, what: str):
        self.status, self.code = status, code
        need = next(perm for start, perm in PERMISSIONS if what.startswith(start)) if code == "AccessDenied" else ""
        super().__init__(f"{what}: S3 said {status} {code}: {message}"
                         + (f" (these credentials lack {need} there: ask the bucket's admin for it)" if need else ""))


class EndpointError(StorageError):
    """The endpoint could not be reached at all."""


@dataclass
class Obj:
    key: str
    size: int
    etag: str
    #: user metadata (``x-amz-meta-*``), from a HEAD only: listings do not carry it
    meta: dict[str, str] = field(default_factory=dict)


def _obj(meta: dict[str, Any]) -> Obj:
    return Obj(meta["path"], int(meta.get("size") or 0), (meta.get("e_tag") or "").strip('"'))


class S3Client:
    """Calls against one bucket. Thread-safe (one connection pool for all threads).

    :param endpoint_url: ``http(s)://host[:port]`` of an S3-compatible store; ``None`` = AWS."""

    def __init__(self, bucket: str, creds: Credentials, region: str = "us-east-1", endpoint_url: str | None = None,
                 timeout: float = 60.0):
        self.bucket, self.creds, self.region, self.timeout = bucket, creds, region or "us-east-1", timeout
        self.endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self._store = self._boto = None

    # -- the two clients, made on first use ----------------------------------------------------
    @property
    def store(self):
        with self._lock:
            if self._store is None:
                from obstore.store import S3Store

                options: dict[str, Any] = {"timeout": f"{self.timeout:g}s", "connect_timeout": "10s",
                                           "pool_max_idle_per_host": str(POOL)}
                if (self.endpoint_url or "").startswith("http://"):
                    options["allow_http"] = True
                config: dict[str, Any] = {"region": self.region,
                                          "virtual_hosted_style_request": not self.endpoint_url
                                          and "." not in self.bucket}
                if self.endpoint_url:
                    config["endpoint"] = self.endpoint_url
                self._store = S3Store(self.bucket, config=config, client_options=options,
                                      retry_config={"max_retries": ATTEMPTS - 1,
                                                    "retry_timeout": dt.timedelta(seconds=self.timeout * ATTEMPTS),
                                                    "backoff": {"init_backoff": dt.timedelta(milliseconds=200),
                                                                "max_backoff": dt.timedelta(seconds=15), "base": 2}},
                                      credential_provider=self.creds.provider())
            return self._store

    @property
    def boto(self):
        """A botocore client, for what obstore does not do (see the module docstring)."""
        with self._lock:
            if self._boto is None:
                self._boto = _botocore_client(self.creds, self.region, self.endpoint_url, self.timeout)
            return self._boto

    # -- calls through obstore ---------------------------------------------------------------------
    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(store)``, its errors as :class:`S3RequestError` / :class:`EndpointError`; a bucket that lives
        in another region is found there and the call made again."""
        try:
            return self._call(what, fn)
        except S3RequestError as exc:
            if exc.status != 301 and exc.code not in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
                raise
            region = self._bucket_region()
            if not region or region == self.region:
                raise
            log.info("bucket %s is in %s, not %s: asking there", self.bucket, region, self.region)
            with self._lock:
                self.region, self._store, self._boto = region, None, None
            return self._call(what, fn)

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self.store)
        except FileNotFoundError:
            raise S3RequestError(404, "NoSuchKey", "not found", what) from None
        except Exception as exc:  # noqa: BLE001 - obstore's errors carry S3's answer in their text
            text = str(exc)
            status = _STATUS.search(text)
            if status is None:
                where = self.endpoint_url or f"S3 in {self.region}"
                first = text.splitlines()[0] if text else type(exc).__name__
                raise EndpointError(f"{what}: cannot reach {where} ({first[:300]})") from None
            code, message = _CODE.search(text), _MESSAGE.search(text)
            raise S3RequestError(int(status.group(1)), code.group(1) if code else status.group(1),
                                 message.group(1) if message else "", what) from None

    def _bucket_region(self) -> str | None:
        """Where the bucket lives, from S3 itself (botocore follows the redirect and reads the header)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self.boto.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            got = getattr(exc, "response", {}) or {}
        return (got.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("x-amz-bucket-region")

    def head_bucket(self) -> None:
        """Reachable, exists, credentials accepted: one listing of nothing (a HEAD has no error body)."""
        import obstore

        self.call(f"bucket {self.bucket!r}", lambda s: obstore.list_with_delimiter(s, prefix=".sciops-check"))

    def list(self, prefix: str = "") -> Iterator[Obj]:
        """Every object under ``prefix`` (ListObjectsV2, 1,000 a page; past a key obstore refuses: s3_keys)."""
        import obstore

        base, what, last = prefix.rstrip("/"), f"list s3://{self.bucket}/{prefix}", None
        stream = self.call(what, lambda s: obstore.list(s, prefix=base or None, chunk_size=1000))
        try:
            for chunk in iter(lambda: self.call(what, lambda _: next(stream, None)), None):
                for meta in (o for o in chunk if o["path"].startswith(prefix)):
                    last = meta["path"]
                    yield _obj(meta)
        except EndpointError as exc:
            yield from map(_obj, s3_keys.list_objects(self.boto, self.bucket, prefix, last, exc))

    def level(self, prefix: str = "") -> tuple[list[Obj], list[str]]:
        """One level under ``prefix`` (ListObjectsV2 with ``delimiter=/``): the objects right there,
        and the sub-prefixes (whole keys ending in ``/``), whose objects are not listed."""
        import obstore

        try:
            got = self.call(f"list s3://{self.bucket}/{prefix}",
                            lambda s: obstore.list_with_delimiter(s, prefix=prefix.rstrip("/") or None))
        except EndpointError as exc:   # a key obstore cannot take as a path, as in list
            got = s3_keys.level_objects(self.boto, self.bucket, prefix, exc)
        return ([_obj(o) for o in got["objects"] if o["path"].startswith(prefix)],
                [p.rstrip("/") + "/" for p in got["common_prefixes"] if p.startswith(prefix)])

    def folders(self, prefix: str = "") -> list[str]:
        """The next path segment under ``prefix``: no object below it is listed."""
        return sorted(x for x in (p[len(prefix):].rstrip("/") for p in self.level(prefix)[1]) if x)

    def head(self, key: str) -> Obj | None:
        """The object's size, ETag and user metadata; None when there is none."""
        import obstore

        try:
            got = self.call(f"HEAD s3://{self.bucket}/{key}", lambda s: obstore.get(s, key, options={"head": True}))
        except S3RequestError as exc:
            if exc.status == 404:
                return None
            raise
        meta = _obj(got.meta)
        meta.meta = {k: v for k, v in (got.attributes or {}).items() if isinstance(v, str)}
        return meta

    def get_bytes(self, key: str) -> bytes:
        import obstore

        what = f"GET s3://{self.bucket}/{key}"
        got = self.call(what, lambda s: obstore.get(s, key))
        return bytes(self.call(what, lambda _: got.bytes()))

    def get_to(self, key: str, fh, start: int = 0) -> None:
        """Stream the object (from byte ``start``) into an open binary file."""
        import obstore

        what = f"GET s3://{self.bucket}/{key}"
        options = {"range": {"offset": start}} if start else None
        got = self.call(what, lambda s: obstore.get(s, key, options=options))
        stream = iter(got.stream(min_chunk_size=1 << 20))
        while True:
            block = self.call(what, lambda _: next(stream, None))
            if block is None:
                return
            fh.write(block)

    def put(self, key: str, body, length: int, meta: dict[str, str] | None = None) -> str:
        """PUT an object (bytes or a callable opening the file) with user metadata; returns its ETag."""
        import obstore

        def send(store):
            fh = body() if callable(body) else body
            try:
                return obstore.put(store, key, fh, attributes=meta or None, use_multipart=False)
            finally:
                if callable(body):
                    fh.close()

        return (self.call(f"PUT s3://{self.bucket}/{key}", send).get("e_tag") or "").strip('"')

    def delete(self, key: str) -> None:
        import obstore

        self.call(f"DELETE s3://{self.bucket}/{key}", lambda s: obstore.delete(s, key))

    # -- through botocore: buckets, and multipart uploads that resume ----------------------------
    def boto_call(self, op: str, what: str, **params) -> dict[str, Any]:
        """One botocore call (it retries); its errors as :class:`S3RequestError` / :class:`EndpointError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.boto, op)(Bucket=self.bucket, **params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            raise S3RequestError(status, err.get("Code") or str(status), err.get("Message") or "", what) from None
        except BotoCoreError as exc:
            where = self.endpoint_url or f"S3 in {self.region}"
            raise EndpointError(f"{what}: cannot reach {where} ({type(exc).__name__}: {exc})") from None

    def create_bucket(self) -> None:
        args = {} if self.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.region}}
        self.boto_call("create_bucket", f"create bucket {self.bucket!r}", **args)

    def create_multipart(self, key: str, meta: dict[str, str] | None = None) -> str:
        """A new multipart upload whose parts carry :data:`PART_CHECKSUM`."""
        return self.boto_call("create_multipart_upload", f"start multipart upload of {key}", Key=key,
                              ChecksumAlgorithm=PART_CHECKSUM, **({"Metadata": meta} if meta else {}))["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body, length: int, checked: bool = True) -> str:
        """One part; ``checked``: with its CRC32 (botocore computes it), for an upload made with one."""
        got = self.boto_call("upload_part", f"upload part {number} of {key}", Key=key, UploadId=upload_id,
                             PartNumber=number, Body=body, ContentLength=length,
                             **({"ChecksumAlgorithm": PART_CHECKSUM} if checked else {}))
        return (got.get("ETag") or "").strip('"')

    def put_tags(self, key: str, tags: dict[str, str]) -> None:
        """Replace the object's tags (S3 object tagging: added after an upload, unlike metadata)."""
        self.boto_call("put_object_tagging", f"tag s3://{self.bucket}/{key}", Key=key,
                       Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})

    def get_tags(self, key: str) -> dict[str, str]:
        """The object's tags; none when the bucket's policy does not let us read them."""
        try:
            got = self.boto_call("get_object_tagging", f"read the tags of s3://{self.bucket}/{key}", Key=key)
        except S3RequestError as exc:
            if exc.status in (403, 404):
                return {}
            raise
        return {t["Key"]: t["Value"] for t in got.get("TagSet") or ()}

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """Parts already uploaded: number → (size, etag)."""
        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = self.boto_call("list_parts", f"list parts of {key}", Key=key, UploadId=upload_id,
                                  PartNumberMarker=marker)
            for p in page.get("Parts") or ():
                parts[int(p["PartNumber"])] = (int(p.get("Size") or 0), (p.get("ETag") or "").strip('"'))
            if not page.get("IsTruncated"):
                return parts
            marker = int(page.get("NextPartNumberMarker") or max(parts))

    def list_uploads(self, key: str) -> list[tuple[str, bool]]:
        """Unfinished multipart uploads of exactly ``key``, oldest first: (upload id, whether its parts
        carry :data:`PART_CHECKSUM`; an upload started by an older SciOps has none)."""
        page = self.boto_call("list_multipart_uploads", f"list unfinished uploads of {key}", Prefix=key)
        return [(u["UploadId"], u.get("ChecksumAlgorithm") == PART_CHECKSUM)
                for u in page.get("Uploads") or () if u.get("Key") == key]

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[str, str | None]]) -> str:
        """Join the parts, given as (ETag, base64 CRC32 or None) in order."""
        listed = [{"PartNumber": i, "ETag": f'"{etag}"', **({"ChecksumCRC32": crc} if crc else {})}
                  for i, (etag, crc) in enumerate(parts, 1)]
        got = self.boto_call("complete_multipart_upload", f"complete multipart upload of {key}", Key=key,
                             UploadId=upload_id, MultipartUpload={"Parts": listed})
        return (got.get("ETag") or "").strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.boto_call("abort_multipart_upload", f"abort multipart upload of {key}", Key=key, UploadId=upload_id)


def _botocore_client(creds: Credentials, region: str, endpoint_url: str | None, timeout: float):
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
