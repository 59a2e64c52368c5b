"""Object keys SciOps will not map to a path, and the listing that still works when a bucket holds them.

Another tool can put an object at ``proj/input/../x.tif``, ``proj/input/./x.tif`` or
``proj/input//x.tif``: S3 keys are any text. Such a key names no file SciOps may write (``..``
leaves the folder, ``.`` and an empty segment name the same path as another key), and obstore
refuses the *whole* listing on the first one ("Encountered illegal character sequence"), which
read as "cannot reach the endpoint". Here: :func:`unsafe_key` says what is wrong with a key, and
:func:`list_objects` lists with botocore (which takes any key) from where obstore stopped, so that
the trees can name and skip such keys (sync down) or refuse them (validate).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: obstore's words when a listing holds a key it cannot parse as a path.
OBSTORE_BAD_PATH = "invalid path"


def unsafe_key(rel: str) -> str | None:
    """Why the key (relative to the tree) cannot be a file path: a ``..``, ``.`` or empty segment, or a
    control character; ``None`` for a good one."""
    segments = rel.split("/")
    if ".." in segments:
        return "a '..' segment"
    if "." in segments:
        return "a '.' segment"
    if "" in segments[:-1] or rel.startswith("/"):
        return "an empty segment ('//')"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        return "a control character"
    return None


def _unless_bad_key(exc: Exception) -> None:
    """Raise ``exc`` again unless it is obstore refusing a key it cannot take as a path."""
    if OBSTORE_BAD_PATH not in str(exc):
        raise exc


def list_objects(boto: Any, bucket: str, prefix: str, start_after: str | None,
                 exc: Exception) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` after ``start_after``, through botocore (any key), as obstore's
    listing dicts (``path``, ``size``, ``e_tag``); ``exc`` (obstore's error) raised again unless a key made it."""
    _unless_bad_key(exc)
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"StartAfter": start_after} if start_after else {})}
    for page in boto.get_paginator("list_objects_v2").paginate(**kwargs):
        for o in page.get("Contents", []):
            yield {"path": o["Key"], "size": o.get("Size", 0), "e_tag": o.get("ETag", "")}


def level_objects(boto: Any, bucket: str, prefix: str, exc: Exception) -> dict[str, list]:
    """One level under ``prefix`` through botocore, as obstore's ``list_with_delimiter`` answers it (``exc``:
    as in :func:`list_objects`)."""
    _unless_bad_key(exc)
    out: dict[str, list] = {"objects": [], "common_prefixes": []}
    for page in boto.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out["objects"] += [{"path": o["Key"], "size": o.get("Size", 0), "e_tag": o.get("ETag", "")}
                           for o in page.get("Contents", [])]
        out["common_prefixes"] += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return out
