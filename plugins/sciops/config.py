"""RunConfig: the validated parameters of one run.

Values come from three places, first wins: the DAG run's conf (the UI form), the
project's ``project.yaml``, the defaults below. Every check here runs in the DAG's
``validate`` task, before any cluster exists or any money is spent, and each
problem names the field and the fix.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sciops.errors import ConfigError
from sciops.names import SAFE_NAME  # noqa: F401 - re-exported: config.SAFE_NAME
SAFE_ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
BACKENDS = ("local", "existing", "parallelcluster")
#: Schedulers each backend can drive (the first is its default). ParallelCluster 3 is Slurm only.
SCHEDULERS = {"local": ("local",), "existing": ("sge", "slurm"), "parallelcluster": ("slurm",)}
LAUNCHERS = ("auto", "imagej1", "fiji")
WORD = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
COMMAND = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")
ABS_PATH = re.compile(r"^/[A-Za-z0-9_./+@-]*$")

#: Built-in defaults; ``project.yaml`` and the run's conf override them.
DEFAULTS: dict[str, Any] = {
    "macro": "count_nuclei",
    "macro_args": {},
    "file_pattern": "*.tif,*.tiff",
    "images_per_task": 25,
    "max_attempts": 3,
    "image_timeout_s": 600,
    "stall_seconds": 60,
    "memory": "2G",
    "backend": "local",
    "slots": 0,
    "launcher": "auto",
    "smoke_test": True,
    # existing backend (a cluster reached over SSH)
    "scheduler": None,
    "ssh_conn_id": "sciops_cluster",
    "queue": None,
    "accounting_project": None,
    "memory_resource": None,
    "exclusive": False,
    "one_per_host": False,
    "cluster_python": "python3",
    "cluster_storage_root": None,
    # storage (run-level only: project.yaml lives in the storage root, so it cannot choose it)
    "storage_root": None,
    "aws_conn_id": None,
    "sync_from": None,
    "sync_to": None,
    # parallelcluster backend: region, subnet_id, key_name, custom_ami, instance types, counts, spot...
    "cluster": None,
    # cost
    "budget_usd": None,
    "hourly_rate_usd": 0.0,
    "slack_conn_id": None,
}
#: Fields a run's conf may set but project.yaml may not.
RUN_ONLY = ("storage_root", "aws_conn_id", "sync_from")
FIELDS = ("project", *DEFAULTS)


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
    return int(mb)


class RunConfig(BaseModel):
    """The parameters of one run, checked.

    :param project: folder name of the project under the storage root.
    :param macro: a shipped macro name (``count_nuclei``) or a path inside the project
        (``src/my_macro.ijm``).
    :param macro_args: ``key=value`` arguments handed to the macro.
    :param file_pattern: comma-separated globs matched (case-insensitively) against image
        paths relative to ``input/``; ``*`` also crosses folders.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    macro: str
    macro_args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    file_pattern: str
    images_per_task: int
    max_attempts: int
    image_timeout_s: int
    stall_seconds: int
    memory: str
    backend: str
    slots: int
    launcher: str
    smoke_test: bool
    scheduler: str | None = None
    ssh_conn_id: str
    queue: str | None = None
    accounting_project: str | None = None
    memory_resource: str | None = None
    exclusive: bool
    one_per_host: bool
    cluster_python: str
    cluster_storage_root: str | None = None
    storage_root: str | None = None
    aws_conn_id: str | None = None
    sync_from: str | None = None
    sync_to: str | None = None
    cluster: dict[str, Any] | None = None
    budget_usd: float | None = None
    hourly_rate_usd: float = 0.0
    slack_conn_id: str | None = None

    @field_validator("budget_usd")
    @classmethod
    def _budget(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be a positive amount of US dollars (got {v}); leave it empty for no cap")
        return v

    @field_validator("hourly_rate_usd")
    @classmethod
    def _rate(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"must be 0 or more US dollars per task-hour (got {v})")
        return v

    @field_validator("slack_conn_id")
    @classmethod
    def _slack(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{v!r} is not an Airflow connection id; use letters, digits and '_.@-'")
        return v

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not SAFE_NAME.match(v):
            raise ValueError(
                f"{v!r} is not a safe project name; use letters, digits, '.', '_' or '-' "
                "(no '/', '..', spaces or shell characters), starting with a letter or digit"
            )
        return v

    @field_validator("macro")
    @classmethod
    def _macro(cls, v: str) -> str:
        if not v or v.startswith(("/", "~")) or ".." in v.split("/") or "\\" in v:
            raise ValueError(f"{v!r}: give a shipped macro name (e.g. 'count_nuclei') or a path inside "
                             "the project such as 'src/my_macro.ijm' (no absolute paths, no '..')")
        if not re.match(r"^[A-Za-z0-9._/ -]+$", v):
            raise ValueError(f"{v!r} has characters a macro path may not have; use letters, digits, '._-/'")
        return v

    @field_validator("macro_args")
    @classmethod
    def _macro_args(cls, v: dict) -> dict:
        for key, value in v.items():
            if not SAFE_ARG_KEY.match(key):
                raise ValueError(f"argument name {key!r} must be a word (letters, digits, '_')")
            if any(c in str(value) for c in "\t\n\r"):
                raise ValueError(f"argument {key!r} may not contain tabs or newlines")
        return v

    @field_validator("file_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not parts:
            raise ValueError("is empty; give a glob such as '*.tif' (several separated by commas)")
        for p in parts:
            if p.startswith(("/", "~")) or ".." in p.replace("\\", "/").split("/"):
                raise ValueError(f"{p!r} must stay inside input/: no absolute paths and no '..'")
        return ",".join(parts)

    @field_validator("images_per_task", "max_attempts", "image_timeout_s", "stall_seconds")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be a whole number of at least 1 (got {v}); set it to 1 or more")
        return v

    @field_validator("slots")
    @classmethod
    def _slots(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be 0 (one per CPU) or a positive number of parallel tasks (got {v})")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        try:
            mb = parse_memory_mb(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a memory size; write it like '2G' or '512M'") from None
        if mb < 512:
            raise ValueError(f"{v!r} is too little for an ImageJ JVM; give at least '512M'")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; choose one of: {', '.join(BACKENDS)}")
        return v

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, v: str) -> str:
        if v not in LAUNCHERS:
            raise ValueError(f"unknown launcher {v!r}; choose one of: {', '.join(LAUNCHERS)}")
        return v

    @field_validator("ssh_conn_id", "queue", "accounting_project")
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{v!r} may hold only letters, digits and '_.@-' (it reaches a remote shell)")
        return v

    @field_validator("memory_resource")
    @classmethod
    def _resource(cls, v: str | None) -> str | None:
        if v is not None and not SAFE_ARG_KEY.match(v):
            raise ValueError(f"{v!r} is not a resource name; use the complex's name, e.g. 'h_vmem'")
        return v

    @field_validator("cluster_python")
    @classmethod
    def _python(cls, v: str) -> str:
        if not COMMAND.match(v):
            raise ValueError(f"{v!r}: give a command name or an absolute path (e.g. python3 or /usr/bin/python3)")
        return v

    @field_validator("cluster_storage_root")
    @classmethod
    def _cluster_root(cls, v: str | None) -> str | None:
        if v is not None and (not ABS_PATH.match(v) or ".." in v.split("/")):
            raise ValueError(f"{v!r}: give the storage root's absolute path on the cluster (no '..', no spaces)")
        return v

    @field_validator("storage_root")
    @classmethod
    def _storage_root(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith("s3://"):
            from sciops.storage import S3Storage
            from sciops.errors import StorageError

            try:
                S3Storage(v)
            except StorageError as exc:
                raise ValueError(str(exc).removeprefix(f"storage root {v!r}: ")) from None
        elif not ABS_PATH.match(v.removeprefix("file://")) or ".." in v.split("/"):
            raise ValueError(f"{v!r}: give s3://bucket[/prefix] or an absolute folder path (no '..', no spaces)")
        return v

    @field_validator("aws_conn_id")
    @classmethod
    def _conn(cls, v: str | None) -> str | None:
        if v is not None and not WORD.match(v):
            raise ValueError(f"{v!r} is not an Airflow connection id; use letters, digits and '_.@-'")
        return v

    @field_validator("sync_from", "sync_to")
    @classmethod
    def _lan_folder(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/") or "\x00" in v):
            raise ValueError(f"{v!r}: give the LAN project folder's absolute path as this worker sees it (no '..')")
        return v

    @model_validator(mode="after")
    def _scheduler_fits_backend(self) -> RunConfig:
        allowed = SCHEDULERS[self.backend]
        if self.scheduler is None:
            object.__setattr__(self, "scheduler", allowed[0])
        elif self.scheduler not in allowed:
            raise ValueError(f"scheduler {self.scheduler!r} does not go with backend {self.backend!r}; "
                             f"choose one of: {', '.join(allowed)}")
        return self

    @property
    def memory_mb(self) -> int:
        return parse_memory_mb(self.memory)

    @property
    def patterns(self) -> list[str]:
        return self.file_pattern.split(",")


def merge(conf: dict[str, Any], project_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run conf over project.yaml over built-in defaults; ``None`` means "not given"."""
    merged = dict(DEFAULTS)
    for source in (project_defaults or {}, conf):
        merged.update({k: v for k, v in source.items() if v is not None})
    return merged


def build(conf: dict[str, Any], project_defaults: dict[str, Any] | None = None) -> RunConfig:
    """Check the run's parameters; raise :class:`ConfigError` naming every bad field."""
    problems: list[tuple[str, str]] = []
    unknown = sorted(set(conf) - set(FIELDS))
    if unknown:
        problems += [(k, f"unknown parameter; known ones are: {', '.join(FIELDS)}") for k in unknown]
    bad_defaults = sorted(set(project_defaults or {}) - set(DEFAULTS))
    problems += [(f"project.yaml:{k}", "not a run default; remove it from project.yaml") for k in bad_defaults]
    problems += [(f"project.yaml:{k}", "chooses where the project is, so it cannot be set inside it; set it in the "
                                       "run's parameters") for k in RUN_ONLY if k in (project_defaults or {})]
    if not conf.get("project"):
        problems.append(("project", "is required: the name of a project folder under the storage root"))
    if problems:
        raise ConfigError(problems)
    merged = merge(conf, {k: v for k, v in (project_defaults or {}).items() if k in DEFAULTS})
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError([(_field(err), _message(err)) for err in exc.errors()]) from None


def _field(err: dict) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    if not loc and "scheduler" in err.get("msg", ""):
        return "scheduler"
    return ".".join(loc) if loc else "config"


def _message(err: dict) -> str:
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    if err.get("type", "").endswith(("_type", "_parsing")):
        msg += f" (got {err.get('input')!r})"
    return msg
