"""What makes a run parameter's value acceptable: the formats, and the checks of each value.

:class:`ValueChecks` holds the field validators :class:`~sciops.run.config.RunConfig` inherits
(a value's own format: names, paths, sizes, patterns); the fields themselves, their choices
(backend, launcher, scheduler) and how they combine are in ``sciops.run.config``. Each check
raises ValueError with the fix, which becomes a ConfigError naming the field.
"""
from __future__ import annotations

import math
import re

from pydantic import field_validator

from sciops.run.bounded import brief, control_chars
from sciops.run.names import SAFE_NAME

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.

SAFE_ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
#: Names that reach a remote shell or a lookup: no leading '-' (``queue: -V`` would be an option).
WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,99}$")
#: macro_args keys the driver sets itself (a macro argument must not override them).
RESERVED_ARGS = ("input", "output", "source", "series", "channel")
COMMAND = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")
ABS_PATH = re.compile(r"^/[A-Za-z0-9_./+@-]*$")
#: What Linux takes: a path, and one name in it (bytes).
PATH_MAX, NAME_MAX = 4000, 255
#: The longest ``series`` pattern (each match of it is also bounded in time: sciops.imaging.bioformats).
MAX_SERIES_PATTERN = 200
#: No node has more memory for one task than this (MB): a bigger value is a typo (100000T).
MAX_TASK_MB = 4 * 1024 * 1024


def parse_memory_mb(text: str | int) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GB"`` or a number of MB → MB."""
    if isinstance(text, bool):
        raise ValueError("not a size")
    if isinstance(text, (int, float)):
        value, unit = float(text), "M"
    else:
        m = MEMORY.match(str(text))
        if not m:
            raise ValueError("not a size")
        value, unit = float(m.group(1)), (m.group(2) or "M").upper()
    mb = value * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if not math.isfinite(mb):   # "9999...9" (400 digits) is a float infinity: no size
        raise ValueError("not a size")
    return int(mb)


class ValueChecks:
    """The field validators of :class:`~sciops.run.config.RunConfig` that check a value's own format."""

    @field_validator("slack_conn_id", check_fields=False)
    @classmethod
    def _slack(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{brief(v)} is not an Airflow connection id; use letters, digits and '_.@-'")
        return v

    @field_validator("project", check_fields=False)
    @classmethod
    def _project(cls, v: str) -> str:
        if not SAFE_NAME.match(v):
            raise ValueError(
                f"{brief(v)} is not a safe project name; use letters, digits, '.', '_' or '-' "
                "(no '/', '..', spaces or shell characters), starting with a letter or digit"
            )
        return v

    @field_validator("macro", check_fields=False)
    @classmethod
    def _macro(cls, v: str) -> str:
        if not v or v.startswith(("/", "~")) or ".." in v.split("/") or "\\" in v:
            raise ValueError(f"{brief(v)}: give a shipped macro name (e.g. 'count_nuclei') or a path inside "
                             "the project such as 'src/my_macro.ijm' (no absolute paths, no '..')")
        if not re.match(r"^[A-Za-z0-9._/ -]+$", v):
            raise ValueError(f"{brief(v)} has characters a macro path may not have; use letters, digits, '._-/'")
        return v

    @field_validator("macro_args", check_fields=False)
    @classmethod
    def _macro_args(cls, v: dict) -> dict:
        for key, value in v.items():
            if key in RESERVED_ARGS:
                raise ValueError(f"argument {brief(key)} is set by SciOps for every image; rename the macro's argument")
            if not SAFE_ARG_KEY.match(key):
                raise ValueError(f"argument name {brief(key)} must be a word (letters, digits, '_')")
            bad = control_chars(value) if isinstance(value, str) else []
            if bad:   # the job file is key=value, tab-separated, one line: a control character could forge one
                raise ValueError(f"argument {brief(key)} may not contain tabs or newlines, nor any other control "
                                 f"character (found {', '.join(bad)})")
        return v

    @field_validator("macro_argument", check_fields=False)
    @classmethod
    def _macro_argument(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if [c for c in control_chars(v) if c != "U+000A"]:
            raise ValueError(f"may not contain tabs or control characters (found "
                             f"{', '.join(c for c in control_chars(v) if c != 'U+000A')}; line breaks are fine)")
        if "{input}" not in v and "{name}" not in v and "{stem}" not in v:
            raise ValueError(f"{brief(v)} names no image: every image would get the same argument; put {{input}} "
                             "(the image's path) where the macro expects it, e.g. '{input},{output}'")
        return v

    @field_validator("series", check_fields=False)
    @classmethod
    def _series(cls, v: str) -> str:
        if v in ("all", "first"):
            return v
        if len(v) > MAX_SERIES_PATTERN:
            raise ValueError(f"is a pattern of {len(v)} characters, more than the {MAX_SERIES_PATTERN} accepted; "
                             "write a shorter one, e.g. 'Well B' or '^pos[0-9]+$'")
        import regex   # what sciops.imaging.bioformats matches with (a timeout bounds each match)

        try:
            regex.compile(v)
        except regex.error as exc:
            raise ValueError(f"{brief(v)} is neither all, first nor a regular expression ({exc}); e.g. 'Well B' or "
                             "'^pos[0-9]+$'") from None
        return v

    @field_validator("file_pattern", check_fields=False)
    @classmethod
    def _pattern(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not parts:
            raise ValueError("is empty; give a glob such as '*.tif' (several separated by commas)")
        for p in parts:
            if p.startswith(("/", "~")) or ".." in p.replace("\\", "/").split("/"):
                raise ValueError(f"{brief(p)} must stay inside input/: no absolute paths and no '..'")
        return ",".join(parts)

    @field_validator("memory", check_fields=False)
    @classmethod
    def _memory(cls, v: str) -> str:
        try:
            mb = parse_memory_mb(v)
        except ValueError:
            raise ValueError(f"{brief(v)} is not a memory size; write it like '2G' or '512M'") from None
        if mb < 512:
            raise ValueError(f"{brief(v)} is too little for an ImageJ JVM; give at least '512M'")
        if mb > MAX_TASK_MB:
            raise ValueError(f"{brief(v)} is more than any node has (at most '{MAX_TASK_MB // 1024 // 1024}T' per task); "
                             "give the memory one task needs, e.g. '4G'")
        return v

    @field_validator("ssh_conn_id", "queue", "accounting_project", check_fields=False)
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{brief(v)} may hold only letters, digits and '_.@-' (it reaches a remote shell)")
        return v

    @field_validator("memory_resource", check_fields=False)
    @classmethod
    def _resource(cls, v: str | None) -> str | None:
        if v is not None and not SAFE_ARG_KEY.match(v):
            raise ValueError(f"{brief(v)} is not a resource name; use the complex's name, e.g. 'h_vmem'")
        return v

    @field_validator("cluster_python", check_fields=False)
    @classmethod
    def _python(cls, v: str) -> str:
        if not COMMAND.match(v):
            raise ValueError(f"{brief(v)}: give a command name or an absolute path (e.g. python3 or /usr/bin/python3)")
        return v

    @field_validator("cluster_storage_root", check_fields=False)
    @classmethod
    def _cluster_root(cls, v: str | None) -> str | None:
        if v is not None and (not ABS_PATH.match(v) or ".." in v.split("/")):
            raise ValueError(f"{brief(v)}: give the storage root's absolute path on the cluster (no '..', no spaces)")
        return v

    @field_validator("storage_root", check_fields=False)
    @classmethod
    def _storage_root(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith("s3://"):
            from sciops.storage.root import S3Storage
            from sciops.errors import StorageError

            try:
                S3Storage(v)
            except StorageError as exc:
                raise ValueError(str(exc).removeprefix(f"storage root {v!r}: ")) from None
        elif not ABS_PATH.match(v.removeprefix("file://")) or ".." in v.split("/"):
            raise ValueError(f"{brief(v)}: give s3://bucket[/prefix] or an absolute folder path (no '..', no spaces)")
        return v

    @field_validator("aws_conn_id", check_fields=False)
    @classmethod
    def _conn(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{brief(v)} is not an Airflow connection id; use letters, digits and '_.@-'")
        return v

    @field_validator("sync_from", "sync_to", check_fields=False)
    @classmethod
    def _lan_folder(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/") or "\x00" in v):
            raise ValueError(f"{brief(v)}: give the LAN project folder's absolute path as this worker sees it (no '..')")
        if v is not None and (len(v.encode()) > PATH_MAX or any(len(p.encode()) > NAME_MAX for p in v.split("/"))):
            raise ValueError(f"{brief(v)}: longer than a path ({PATH_MAX} bytes) or a folder name ({NAME_MAX} bytes) "
                             "may be; give the LAN project folder's path")
        return v
