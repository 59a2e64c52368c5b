"""The two kinds of tree a sync runs between, behind one interface: a local folder and an S3 prefix.

:mod:`sciops.storage.sync` plans and runs a sync over :class:`Tree` objects and never asks which kind
it holds; :mod:`sciops.storage.root` hands out trees. Each tree says what it holds
(:meth:`Tree.list`), the checksum of an entry in the form of S3's ETag (:meth:`Tree.checksum`),
its content MD5 where it can tell (:meth:`Tree.md5`), and takes a file from another tree
(:meth:`Tree.receive`).

S3's ETag is the MD5 of an object only for single-part uploads without SSE-KMS; a multipart
upload's is the MD5 of its parts' MD5s with ``-N`` (reproducible when the part size is known),
and an SSE-KMS object's is neither. So an upload stores the file's MD5 with the object where it has it
(user metadata ``sciops-md5``), the local side records the MD5 of every object it sent or fetched
(the checksum cache's ``objects``), and a comparison that neither settles asks S3 for the
stored MD5 (one HEAD: an SSE-KMS object this machine has not seen, or a file that differs
from an object it did not send).

A multipart upload checks its first part's ETag against that part's MD5. Where they agree (any
bucket without SSE-KMS) the object's ETag is the file's multipart ETag for SciOps' part size, which
any machine can recompute: it goes into the checksum cache (a no-op resync reads no file) and no
MD5 of the whole file is computed. Where they differ (SSE-KMS) the file's MD5 is computed while the
other parts go out and stored after the upload completes as the object tag ``sciops-md5`` (one
PutObjectTagging; metadata is fixed when an upload starts and cannot be added later without
copying the object). :meth:`S3Tree.md5` reads the metadata, then the tag. A bucket policy that
denies tagging costs only this: another machine, on an SSE-KMS bucket, sends or fetches that file
once more. Computing that MD5 on every upload cost a core-second per 0.7 GB, which on the testbed
(``bench/bench_scale.py --parts sync``: the client shares two cores with moto_server) was time
taken from the server.
"""
from sciops.storage.trees.base import (
                                       MD5_META,
                                       PARTIAL_SUFFIX,
                                       Entry,
                                       MiB,
                                       Progress,
                                       Tree,
                                       part_size,
                                       safe_rel,
                                       selected,
                                       top_level,
)
from sciops.storage.trees.etags import EtagCache, etag_shape, file_etag
from sciops.storage.trees.local import LocalTree
from sciops.storage.trees.s3 import S3Tree

__all__ = ["MD5_META", "PARTIAL_SUFFIX", "Entry", "EtagCache", "LocalTree", "MiB", "Progress", "S3Tree", "Tree",
           "etag_shape", "file_etag", "part_size", "safe_rel", "selected", "top_level"]
