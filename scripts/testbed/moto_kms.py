"""moto_server as a bucket with default SSE-KMS encryption answers: ETags that are not the MD5.

S3 documents that an object encrypted with SSE-KMS has an ETag that is not an MD5 digest of
its data (and differs per upload). moto gives every object its MD5 as ETag, so a sync that
assumes ETag = MD5 would pass against it and fail on an institute's encrypted bucket. This
starts the same moto_server with that one rule of S3's applied to every object, so the tests
run against the behaviour they claim to handle. Usage: ``python moto_kms.py -H 127.0.0.1 -p PORT``.
"""
import hashlib
import os
import sys

from moto.s3 import models

_md5_etag = models.FakeKey.etag


def _kms_etag(self) -> str:
    """Per object version: 32 hex digits that are not the data's MD5 (a multipart upload keeps its -N)."""
    plain = _md5_etag.fget(self).strip('"')
    if not getattr(self, "_sciops_kms_salt", None):
        self._sciops_kms_salt = os.urandom(16)
    digest = hashlib.md5(self._sciops_kms_salt + plain.encode()).hexdigest()
    return f'"{digest}{plain[32:]}"'


models.FakeKey.etag = property(_kms_etag)

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
