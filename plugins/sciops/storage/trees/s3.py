"""An S3 prefix as a sync tree."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Iterable

from sciops.errors import StorageError
from sciops.storage.s3 import S3Client, part_crc32
from sciops.storage.s3_keys import unsafe_key
from sciops.storage.trees.base import (
    MD5_META,
    MULTIPART_THRESHOLD,
    PART_WORKERS,
    Entry,
    MiB,
    Progress,
    Tree,
    part_size,
    parts_in_flight,
    safe_rel,
    selected,
    top_level,
)

log = logging.getLogger(__name__)


class S3Tree(Tree):
    is_remote = True

    def __init__(self, client: S3Client, prefix: str):
        self.client = client
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        #: keys the last listing skipped, each with why (:func:`sciops.storage.s3_keys.unsafe_key`)
        self.unsafe: dict[str, str] = {}

    def __str__(self) -> str:
        return f"s3://{self.client.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return self.prefix + safe_rel(rel)

    def list(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, Entry]:
        """Every object (``include``/``exclude`` as in :func:`sync`). When they rule out top-level
        folders (a project's ``output/`` with every past run in it), one delimiter listing finds the
        top level and only the wanted folders are listed."""
        top = top_level(include, exclude)
        if top is None:
            objs: Iterable = self.client.list(self.prefix)
        else:
            files, folders = self.client.level(self.prefix)
            wanted = [f for f in folders if top(f[len(self.prefix):].rstrip("/"))]
            objs = [*files, *(o for f in wanted for o in self.client.list(f))]
        out, self.unsafe = {}, {}
        for obj in objs:
            rel = obj.key[len(self.prefix):]
            if not rel or rel.endswith("/"):  # "folder" markers made by consoles
                continue
            why = unsafe_key(rel)
            if why:   # put there by another tool: no file may be made of it (validate refuses it, sync skips it)
                self.unsafe[obj.key] = why
            elif selected(rel, include, exclude):
                out[rel] = Entry(obj.size, obj.etag)
        if self.unsafe:
            log.warning("%s: skipped %d object(s) whose key is no file path: %s", self, len(self.unsafe),
                        "; ".join(f"{k!r} ({why})" for k, why in list(self.unsafe.items())[:10]))
        return out


    def checksum(self, rel: str, entry: Entry, shape: int | None) -> str | None:
        return entry.etag

    def md5(self, rel: str, entry: Entry) -> str | None:
        """The MD5 an upload by SciOps stored with the object (one HEAD; a multipart upload's may be in
        its tags, one more request); None for others' objects."""
        found = self.client.head(self.key(rel))
        if found is None:
            return None
        if MD5_META in found.meta or "-" not in (found.etag or entry.etag or ""):
            return found.meta.get(MD5_META)
        return self.client.get_tags(self.key(rel)).get(MD5_META)

    def read_into(self, rel: str, fh, start: int = 0) -> None:
        self.client.get_to(self.key(rel), fh, start=start)

    def receive(self, src: Tree, rel: str, e: Entry, progress: Progress) -> tuple[int, int, str | None]:
        """An upload of a local file, in parts past 8 MiB; an unfinished multipart upload is resumed."""
        path = src.local_path(rel)
        if path is None:
            raise StorageError("S3 to S3 sync is not supported; sync through a folder")
        key, client = self.key(rel), self.client
        if e.size <= MULTIPART_THRESHOLD:
            md5 = src.md5(rel, e)
            etag = client.put(key, lambda: open(path, "rb"), e.size, {MD5_META: md5})
            src.remember(rel, etag, md5)
            progress.add(e.size)
            return 0, 0, etag or None
        md5 = src.known_md5(rel, e)
        size = part_size(e.size)
        parts = -(-e.size // size)
        done: dict[int, tuple[int, str]] = {}
        upload_id, checked = None, True
        for candidate, checked in reversed(client.list_uploads(key)):  # newest unfinished upload first
            upload_id, done = candidate, client.list_parts(key, candidate)
            break
        if upload_id is None:
            upload_id, checked = client.create_multipart(key, {MD5_META: md5} if md5 else None), True
        fd = os.open(path, os.O_RDONLY)
        failed: list[BaseException] = []
        hashing: list[threading.Thread] = []
        found: list[str] = []
        plain: list[bool] = []

        def whole_md5() -> None:   # while the other parts go out; from the page cache, as a rule
            h = hashlib.md5()
            offset = 0
            while block := os.pread(fd, 8 * MiB, offset):
                h.update(block)
                offset += len(block)
            found.append(h.hexdigest())

        def one(number: int) -> tuple[str, str | None, bool]:
            with parts_in_flight:   # a part is read only when it can be sent: memory bounded, not per file
                if failed:
                    raise StorageError("another part of this upload failed")
                data = os.pread(fd, size, (number - 1) * size)
                have = done.get(number)
                crc = part_crc32(data) if checked else None
                try:
                    if have and have[0] == len(data) and have[1] == hashlib.md5(data).hexdigest():
                        plain.append(True)   # a part whose ETag is its MD5: so are the others
                        return have[1], crc, True
                    sent = client.upload_part(key, upload_id, number, data, len(data), checked=checked)
                    if number == 1:   # is a part's ETag its MD5 here? Then the object's ETag is the file's
                        plain.append(sent == hashlib.md5(data).hexdigest())
                        if md5 is None and not plain[-1]:   # no (SSE-KMS): the file's MD5 goes in a tag
                            hashing.append(threading.Thread(target=whole_md5, name="sciops-md5", daemon=True))
                            hashing[0].start()
                    return sent or hashlib.md5(data).hexdigest(), crc, False
                except BaseException as exc:
                    failed.append(exc)
                    raise
                finally:
                    progress.add(len(data))

        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(min(PART_WORKERS, parts), thread_name_prefix="sciops-part") as pool:
                answers = list(pool.map(one, range(1, parts + 1)))
        finally:
            for thread in hashing:
                thread.join()
            os.close(fd)
        reused = sum(1 for *_, was in answers if was)   # a part failed? the upload stays: run it again
        etag = client.complete_multipart(key, upload_id, [(etag, crc) for etag, crc, _ in answers])
        if found:
            md5 = found[0]
            src.learned(rel, e, None, md5)
            try:
                client.put_tags(key, {MD5_META: md5})
            except StorageError as exc:
                log.warning("%s: could not tag the object with its MD5 (%s); on an SSE-KMS bucket, another "
                            "machine will send or fetch it once more", key, exc)
        if etag and any(plain):   # the parts' ETags are their MD5s, so this one is the file's multipart ETag
            src.learned(rel, e, size, etag)   # with this part size (a no-op resync reads nothing); any machine
                                              # can check it: no MD5 needed in a tag
        src.remember(rel, etag, md5)
        return reused, 0, etag or None

    def delete(self, rel: str) -> None:
        self.client.delete(self.key(rel))
