"""A small S3 client for the sync engine: SigV4-signed requests over pooled HTTP connections.

Why not boto3 here: a sync of thousands of small files is dominated by per-request
overhead and by parsing listings; building a boto3 client alone costs ~1 s of CPU. This
client signs each request with SigV4 (``Authorization`` header, ``UNSIGNED-PAYLOAD``), keeps one
keep-alive connection per thread, and parses listings with ElementTree. It speaks only
the calls sync needs: list, head, get (with ranges), put, delete and multipart
(create, upload part, list parts, list uploads, complete). Credentials are handed in by
:mod:`sciops.storage`, which gets them from an Airflow connection; they are never logged
and never put in an error message.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import logging
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Iterator

from sciops.errors import StorageError

log = logging.getLogger(__name__)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
RETRIES = 4
RETRY_STATUSES = {500, 502, 503, 504}
#: Error codes that mean "these credentials are not accepted", whatever the bucket.
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "AuthorizationHeaderMalformed"}


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


class S3RequestError(StorageError):
    """S3 answered with an error: ``status`` and ``code`` (e.g. 404 NoSuchBucket)."""

    def __init__(self, status: int, code: str, message: str, what: str):
        self.status, self.code = status, code
        super().__init__(f"{what}: S3 said {status} {code}: {message}")


class EndpointError(StorageError):
    """The endpoint could not be reached at all."""


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))


def sign(method: str, host: str, path: str, query: dict[str, str], creds: Credentials, region: str,
         now: dt.datetime | None = None, payload_hash: str = "UNSIGNED-PAYLOAD") -> dict[str, str]:
    """SigV4 headers (``Authorization`` and the ``x-amz-*`` it signs); ``path`` is already URI-encoded."""
    now = now or dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if creds.token:
        headers["x-amz-security-token"] = creds.token
    names = sorted(headers)
    canonical = "\n".join([method, path, canonical_query(query), "".join(f"{k}:{headers[k]}\n" for k in names),
                           ";".join(names), payload_hash])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(("AWS4" + creds.secret_key).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    del headers["host"]  # http.client sends it
    return headers


@dataclass
class Obj:
    key: str
    size: int
    etag: str


class S3Client:
    """Requests against one bucket. Thread-safe: each thread gets its own connection.

    :param endpoint_url: ``http(s)://host[:port]`` of an S3-compatible store; ``None`` = AWS.
    """

    def __init__(self, bucket: str, creds: Credentials, region: str = "us-east-1", endpoint_url: str | None = None,
                 timeout: float = 60.0):
        self.bucket, self.creds, self.region, self.timeout = bucket, creds, region or "us-east-1", timeout
        if endpoint_url:
            u = urllib.parse.urlsplit(endpoint_url)
            self.scheme, self.host = u.scheme or "https", u.netloc
            self.base_path = "/" + _quote(bucket, safe="-_.~")  # path style for custom endpoints
        else:
            self.scheme = "https"
            self.host = f"{bucket}.s3.{self.region}.amazonaws.com"  # virtual-hosted style on AWS
            self.base_path = ""
        self.endpoint = f"{self.scheme}://{self.host}"
        self._local = threading.local()

    # -- transport -------------------------------------------------------------------------
    def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, timeout=self.timeout)
        return conn

    def request(self, method: str, key: str = "", query: dict[str, str] | None = None, body=None,
                headers: dict[str, str] | None = None, what: str = "", ok: tuple[int, ...] = (200,),
                stream_to=None) -> tuple[int, dict[str, str], bytes]:
        """One signed request with retries on connection errors and 5xx; raises on a non-``ok`` status.

        ``body`` may be bytes or a callable returning a fresh file object (re-opened on a retry).
        ``stream_to(response)`` consumes a 2xx body instead of reading it into memory.
        """
        path = self.base_path + "/" + _quote(key, safe="-_.~/") if key else (self.base_path or "/")
        what = what or f"{method} s3://{self.bucket}/{key}"
        delay = 0.2
        for attempt in range(RETRIES + 1):
            signed = sign(method, self.host, path, query or {}, self.creds.current(), self.region)
            target = path + ("?" + canonical_query(query) if query else "")
            fh = None
            try:
                payload = body
                if callable(body):
                    fh = payload = body()
                conn = self._conn(fresh=attempt > 0)
                conn.request(method, target, body=payload, headers={**(headers or {}), **signed})
                resp = conn.getresponse()
                status = resp.status
                if status in ok and stream_to is not None:
                    stream_to(resp)
                    data = b""
                else:
                    data = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
            except (OSError, http.client.HTTPException) as exc:
                self._local.conn = None
                if attempt == RETRIES:
                    raise EndpointError(f"{what}: cannot reach the S3 endpoint {self.endpoint} "
                                        f"({type(exc).__name__}: {exc})") from None
                time.sleep(delay)
                delay *= 2
                continue
            finally:
                if fh is not None:
                    fh.close()
            if status in ok:
                return status, hdrs, data
            if status in RETRY_STATUSES and attempt < RETRIES:
                time.sleep(delay)
                delay *= 2
                continue
            code, message = _error(data)
            raise S3RequestError(status, code or http.client.responses.get(status, "error"), message, what)
        raise AssertionError("unreachable")

    # -- calls -----------------------------------------------------------------------------
    def head_bucket(self) -> None:
        self.request("HEAD", what=f"bucket {self.bucket!r}")

    def list(self, prefix: str = "") -> Iterator[Obj]:
        """Every object under ``prefix`` (ListObjectsV2, 1,000 a page)."""
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            _, _, data = self.request("GET", query=query, what=f"list s3://{self.bucket}/{prefix}")
            root = ET.fromstring(data)
            for c in root.iter(f"{NS}Contents"):
                yield Obj(c.findtext(f"{NS}Key"), int(c.findtext(f"{NS}Size") or 0),
                          (c.findtext(f"{NS}ETag") or "").strip('"'))
            if root.findtext(f"{NS}IsTruncated") != "true":
                return
            token = root.findtext(f"{NS}NextContinuationToken")

    def level(self, prefix: str = "") -> tuple[list[Obj], list[str]]:
        """One level under ``prefix`` (ListObjectsV2 with ``delimiter=/``): the objects right there,
        and the sub-prefixes (whole keys ending in ``/``), whose objects are not listed."""
        objs, prefixes, token = [], [], None
        while True:
            query = {"list-type": "2", "prefix": prefix, "delimiter": "/", "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            _, _, data = self.request("GET", query=query, what=f"list s3://{self.bucket}/{prefix}")
            root = ET.fromstring(data)
            objs += [Obj(c.findtext(f"{NS}Key"), int(c.findtext(f"{NS}Size") or 0),
                         (c.findtext(f"{NS}ETag") or "").strip('"')) for c in root.iter(f"{NS}Contents")]
            prefixes += [p.findtext(f"{NS}Prefix") or "" for p in root.iter(f"{NS}CommonPrefixes")]
            if root.findtext(f"{NS}IsTruncated") != "true":
                return objs, prefixes
            token = root.findtext(f"{NS}NextContinuationToken")

    def folders(self, prefix: str = "") -> list[str]:
        """The next path segment under ``prefix``: no object below it is listed."""
        return sorted(x for x in (p[len(prefix):].rstrip("/") for p in self.level(prefix)[1]) if x)

    def head(self, key: str) -> Obj | None:
        try:
            _, hdrs, _ = self.request("HEAD", key)
        except S3RequestError as exc:
            if exc.status == 404:
                return None
            raise
        return Obj(key, int(hdrs.get("content-length", 0)), hdrs.get("etag", "").strip('"'))

    def get_bytes(self, key: str) -> bytes:
        return self.request("GET", key)[2]

    def get_to(self, key: str, fh, start: int = 0) -> None:
        """Stream the object (from byte ``start``) into an open binary file."""
        headers = {"Range": f"bytes={start}-"} if start else {}

        def copy(resp):
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                fh.write(block)

        self.request("GET", key, headers=headers, ok=(200, 206), stream_to=copy)

    def put(self, key: str, body, length: int) -> str:
        """PUT an object (bytes or a callable opening the file); returns its ETag."""
        _, hdrs, _ = self.request("PUT", key, body=body, headers={"Content-Length": str(length)})
        return hdrs.get("etag", "").strip('"')

    def delete(self, key: str) -> None:
        self.request("DELETE", key, ok=(200, 204))

    # -- multipart -------------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        data = self.request("POST", key, query={"uploads": ""})[2]
        return ET.fromstring(data).findtext(f"{NS}UploadId")

    def upload_part(self, key: str, upload_id: str, number: int, body, length: int) -> str:
        _, hdrs, _ = self.request("PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, body=body,
                                  headers={"Content-Length": str(length)})
        return hdrs.get("etag", "").strip('"')

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """Parts already uploaded: number → (size, etag)."""
        parts: dict[int, tuple[int, str]] = {}
        marker = "0"
        while True:
            data = self.request("GET", key, query={"uploadId": upload_id, "part-number-marker": marker})[2]
            root = ET.fromstring(data)
            for p in root.iter(f"{NS}Part"):
                parts[int(p.findtext(f"{NS}PartNumber"))] = (int(p.findtext(f"{NS}Size") or 0),
                                                            (p.findtext(f"{NS}ETag") or "").strip('"'))
            if root.findtext(f"{NS}IsTruncated") != "true":
                return parts
            marker = root.findtext(f"{NS}NextPartNumberMarker") or str(max(parts))

    def list_uploads(self, key: str) -> list[str]:
        """Unfinished multipart uploads of exactly ``key``, oldest first."""
        data = self.request("GET", query={"uploads": "", "prefix": key})[2]
        root = ET.fromstring(data)
        return [u.findtext(f"{NS}UploadId") for u in root.iter(f"{NS}Upload") if u.findtext(f"{NS}Key") == key]

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str:
        body = ("<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{i}</PartNumber><ETag>\"{e}\"</ETag></Part>" for i, e in enumerate(etags, 1))
            + "</CompleteMultipartUpload>").encode()
        data = self.request("POST", key, query={"uploadId": upload_id}, body=body,
                            headers={"Content-Length": str(len(body))})[2]
        root = ET.fromstring(data)
        if root.tag.endswith("Error"):  # S3 may answer 200 and put the error in the body
            raise S3RequestError(200, root.findtext("Code") or "", root.findtext("Message") or "",
                                 f"complete multipart upload of {key}")
        return (root.findtext(f"{NS}ETag") or "").strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.request("DELETE", key, query={"uploadId": upload_id}, ok=(200, 204))


def _error(data: bytes) -> tuple[str, str]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return "", data[:200].decode("utf-8", "replace")
    return root.findtext("Code") or "", root.findtext("Message") or ""
