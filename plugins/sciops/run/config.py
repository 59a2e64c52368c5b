"""RunConfig: the parameters of one run, declared once and checked.

Each parameter is one field of :class:`RunConfig`: its type, built-in default, bounds,
description, form section and whether ``project.yaml`` may set it. The DAG's trigger form
and docs/parameters.md's table (``sciops.run.form``: ``form_params``, ``readme_table``) and
the checks in the DAG's ``validate`` task (:func:`build`) all come from it. What makes a value
acceptable is in ``sciops.run.values`` (RunConfig inherits its field validators); pydantic's
errors become the problems a ConfigError names in ``sciops.run.messages``. The backends and
the schedulers each takes come from the backend registry (``sciops.clusters``).

Values come from three places: the DAG run's conf (the UI form or a REST call), the
project's ``project.yaml``, the built-in defaults. **A run value that equals the built-in
default counts as not given**, so ``project.yaml`` wins over every field the user left
as the form showed it (the form sends every field, changed or not); a run value that
differs from the default wins over both. Every check runs in ``validate``, before any
cluster exists or any money is spent, and each problem names the field and the fix.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_serializer, field_validator, model_validator

from sciops import MACRO_DIR
from sciops.clusters import BACKENDS, SCHEDULERS, SECTION_BACKENDS  # the backends' own declarations
from sciops.errors import ConfigError
from sciops.run import messages
from sciops.run.bounded import brief
from sciops.run.names import SAFE_NAME
from sciops.run.values import COMMAND, SAFE_ARG_KEY, WORD, ValueChecks, parse_memory_mb
from sciops_node.qc import MODES as QC_MODES   # the node's own list: one place

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.

#: Schedulers a run may choose: those of the backends that drive more than one (the rest have no choice).
SCHEDULER_CHOICES = tuple(dict.fromkeys(s for names in SCHEDULERS.values() if len(names) > 1 for s in names))
LAUNCHERS = ("auto", "imagej1", "fiji")
#: Connections a run may name without the deployment listing them (SCIOPS_ALLOWED_CONN_IDS adds more).
CONN_ID_DEFAULT_ALLOW = re.compile(r"^(sciops_[A-Za-z0-9_.@-]*|aws_default)$")
#: The trigger form's sections, in order (Airflow groups fields by ``section``). A backend names the
#: ones whose fields apply to it (``form_sections``); SECTION_BACKENDS maps each to those backends.
SECTIONS = ("Run", "Local backend", "Existing cluster (SSH)", "ParallelCluster", "Storage", "Cost and messages")


def _param(default: Any, description: str, *, section: str = "Run", project_yaml: bool = True,
           shown: str | None = None, enum: tuple | None = None, labels: dict[str, str] | None = None,
           pattern: str | None = None, **bounds: Any) -> Any:
    """One parameter: a pydantic field carrying what the form and the README show.

    ``shown`` is the README's default column when the default is not a plain value
    (e.g. ``$SCIOPS_STORAGE_ROOT``); ``labels`` name enum entries in the form
    (``"None"`` is the entry for "not set").
    """
    extra: dict[str, Any] = {"section": section, "project_yaml": project_yaml}
    for key, value in (("shown", shown), ("enum", list(enum) if enum else None), ("values_display", labels),
                       ("pattern", pattern)):
        if value is not None:
            extra[key] = value
    return Field(default, description=description, json_schema_extra=extra, **bounds)


#: The ``memory`` parameter's default, and in MB what a task gets when nothing says (the planner's too).
DEFAULT_MEMORY = "2G"
DEFAULT_MEMORY_MB = parse_memory_mb(DEFAULT_MEMORY)

#: The longest text any parameter takes, and the most macro_args (bounds that name the field when crossed).
MAX_TEXT = 4096
MAX_MACRO_ARGS = 100
#: Parameters a run's conf may give at most (a conf of thousands of unknown keys gets one problem, not thousands).
MAX_CONF_KEYS = 200

_EXISTING, _LOCAL, _PC, _STORAGE, _COST = SECTIONS[2], SECTIONS[1], SECTIONS[3], SECTIONS[4], SECTIONS[5]


class ClusterSettings(BaseModel):
    """What a run may ask of an ephemeral ParallelCluster (the ``cluster`` parameter), each key typed once.

    Every key is optional here; the parallelcluster backend requires the first four and fills
    the rest from ``PClusterSettings``' defaults (``sciops.clusters.parallelcluster``), where the
    formats (subnet and AMI ids, known instance types) and what fits a node are checked too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    region: str | None = Field(None, description="AWS region, e.g. eu-west-1 (required)")
    subnet_id: str | None = Field(None, description="subnet of the head and compute nodes (required)")
    key_name: str | None = Field(None, description="EC2 key pair for SSH to the head node (required)")
    custom_ami: str | None = Field(None, description="AMI with Fiji installed (required)")
    head_node_instance_type: str | None = Field(None, description="head node instance type (t3.medium)")
    compute_instance_type: str | None = Field(None, description="compute node instance type (c5.xlarge)")
    min_count: int | None = Field(None, ge=0, le=10_000, description="compute nodes kept running (0)")
    max_count: int | None = Field(None, ge=1, le=10_000, description="compute nodes at most (4)")
    spot: bool | None = Field(None, description="spot capacity instead of on-demand (false)")
    spot_max_price: float | None = Field(None, gt=0, le=1000, description="spot: highest USD per hour per node")
    shared_storage_gb: int | None = Field(None, ge=1, le=65_536, description="shared EBS volume (100 GB)")
    root_volume_gb: int | None = Field(None, ge=35, le=16_384, description="each node's root volume (60 GB)")
    os: str | None = Field(None, pattern=r"^[a-z0-9]+$", description="the AMI's OS as pcluster names it (alinux2023)")

    def given(self) -> dict[str, Any]:
        """The keys the run set (the rest take PClusterSettings' defaults)."""
        return self.model_dump(exclude_none=True)


class RunConfig(ValueChecks, BaseModel):
    """The parameters of one run, checked (each field's description says what it does)."""

    # (the docstring is the JSON schema's description.) Each value's own format is checked by the
    # validators RunConfig inherits (sciops.run.values.ValueChecks); here, its choices: backend,
    # launcher, the backend's scheduler.

    # strict: True is not 1, "5" is not 5; no NaN or infinity (JSON and YAML can spell both); no text longer
    # than MAX_TEXT (a path, a pattern, an argument): a megabyte-long value is a mistake, never a parameter
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              str_max_length=MAX_TEXT)

    project: str = Field(description="Project folder under the storage root (letters, digits, '._-')",
                         min_length=1, json_schema_extra={"section": "Run", "project_yaml": False,
                                                          "shown": "(required)", "pattern": SAFE_NAME.pattern})
    macro: str = _param("count_nuclei", f"A shipped macro ({', '.join(sorted(p.stem for p in MACRO_DIR.glob('*.ijm')))})"
                                        " or a file in the project, e.g. src/x.ijm")
    macro_args: dict[str, str | int | float | bool] = _param({}, "key: value arguments handed to the macro",
                                                             max_length=MAX_MACRO_ARGS)
    macro_argument: str | None = _param(None, "For a lab macro that splits its own getArgument() string: the "
                                              "text it gets, with {input}, {output}, {name}, {stem} and "
                                              "{<macro_args key>} filled in per image, e.g. '{input},{output},5' "
                                              "(empty = key=value lines; docs/lab-macros.md)", shown="key=value lines")
    file_pattern: str = _param("*.tif,*.tiff", "Comma-separated globs under input/, case-insensitive; "
                                               "* also crosses folders")
    series: str = _param("all", "Files read through Bio-Formats (vendor formats such as .czi .nd2 .lif, and "
                                "OME-TIFF): which series become units of work: all, first, or a regular "
                                "expression searched in the series names (e.g. 'Well B')")
    channel: str = _param("all", "Files read through Bio-Formats: the channel the macro sees: all (the channels as "
                                 "a stack), a number (1 = the first), or each (every channel a unit of its own)",
                          pattern=r"^(all|each|[1-9][0-9]{0,3})$")
    skip_unreadable: bool = _param(False, "When some files cannot be read (corrupt, cut short, not their format): "
                                          "run the others and list these in failures.csv with the reason (false = "
                                          "refuse the run, naming them)")
    images_per_task: int = _param(0, "Images per array task (one JVM each; on the local backend a slot's JVM goes "
                                     "on with the next tasks); 0 = auto: 25, or on the local backend 2 tasks a "
                                     "slot, then smaller ones so the slots end together",
                                  ge=0, le=100_000)
    max_attempts: int = _param(3, "Submissions of a failed chunk, the first included", ge=1, le=20)
    image_timeout_s: int = _param(600, "Seconds one image may take before it is killed and recorded 'timeout'",
                                  ge=1, le=7 * 86400)
    stall_seconds: int = _param(60, "No output and an idle CPU this long = ImageJ hung on an error dialog",
                                ge=1, le=86400)
    memory: str = _param(DEFAULT_MEMORY, "Memory per task, e.g. 2G or 512M (at least 512M); the JVM's -Xmx is derived "
                               "from it")
    backend: str = _param("local", "Where the array runs: local (this machine), existing (a cluster over SSH) "
                                   "or parallelcluster (an AWS cluster made for the run)", enum=BACKENDS)
    launcher: str = _param("auto", "ImageJ launcher: fiji (ImageJ-linux64 --headless, via SCIOPS_FIJI or PATH), "
                                   "imagej1 (java -jar ij.jar -batch under Xvfb) or auto (whichever is found)",
                           enum=LAUNCHERS)
    smoke_test: bool = _param(True, "Run the macro on a few images in validate first")
    qc_images: str = _param("sample", "QC overlays (qc.png: the image with the outlines of what the macro "
                                      "measured) for: all images (~15-20 % more ImageJ time), a sample (1 in 40 and "
                                      "every unusual one: ~1 %) or none", enum=QC_MODES)
    only_new: bool = _param(False, "Only images this macro, with these macro_args, has not processed yet (new, or "
                                   "changed since): the nightly DAG sets it")
    slots: int = _param(0, "local backend: tasks at once (0 = one per CPU)", section=_LOCAL, ge=0, le=4096)
    scheduler: str | None = _param(None, "The cluster's scheduler (empty = the backend's own: sge for existing, "
                                         "slurm for parallelcluster)",
                                   shown="the backend's", enum=(None, *SCHEDULER_CHOICES),
                                   labels={"None": "the backend's own"})
    ssh_conn_id: str = _param("sciops_cluster", "existing backend: Airflow SSH connection of a submit host",
                              section=_EXISTING, pattern=WORD.pattern)
    queue: str | None = _param(None, "existing backend: queue (SGE -q) or partition (Slurm --partition)",
                               section=_EXISTING, pattern=WORD.pattern)
    accounting_project: str | None = _param(None, "existing backend: accounting project (SGE -P) or account "
                                                  "(Slurm --account)", section=_EXISTING, pattern=WORD.pattern)
    memory_resource: str | None = _param(None, "existing backend: memory complex to request, e.g. h_vmem (SGE "
                                               "limits virtual memory, so it asks for -Xmx + 2.5 GB)",
                                         section=_EXISTING, pattern=SAFE_ARG_KEY.pattern)
    exclusive: bool = _param(False, "existing backend: one task per node (SGE -l exclusive=true, Slurm "
                                    "--exclusive)", section=_EXISTING)
    one_per_host: bool = _param(False, "existing backend: one ImageJ per node (SGE -l fiji=1, Slurm "
                                       "--gres=fiji:1: a resource your cluster defines)", section=_EXISTING)
    cluster_python: str = _param("python3", "existing backend: Python 3 on the compute nodes (the task runner "
                                            "needs nothing else)", section=_EXISTING, pattern=COMMAND.pattern)
    cluster_storage_root: str | None = _param(None, "existing backend: the storage root's absolute path on the "
                                                    "cluster (empty = the same path as here)", section=_EXISTING,
                                              shown="same path")
    cluster: ClusterSettings = Field(default_factory=ClusterSettings, description=(
        "parallelcluster backend: {region, subnet_id, key_name, custom_ami} (required) and head_node_instance_type "
        "(t3.medium), compute_instance_type (c5.xlarge), min_count (0), max_count (4), spot (false), "
        "spot_max_price, shared_storage_gb (100), root_volume_gb (60), os (alinux2023)"),
        json_schema_extra={"section": _PC, "project_yaml": True, "shown": "`{}`"})
    storage_root: str | None = _param(None, "s3://bucket[/prefix] or an absolute folder (empty = "
                                            "$SCIOPS_STORAGE_ROOT)", section=_STORAGE, project_yaml=False,
                                      shown="$SCIOPS_STORAGE_ROOT")
    aws_conn_id: str | None = _param(None, "S3 storage: the Airflow AWS connection (empty = aws_default; an "
                                           "endpoint_url in its extras reaches S3-compatible stores)",
                                     section=_STORAGE, project_yaml=False, shown="aws_default",
                                     pattern=WORD.pattern)
    sync_from: str | None = _param(None, "A LAN project folder (as this worker sees it) synced up before the "
                                         "run (output/ stays behind)", section=_STORAGE, project_yaml=False)
    sync_to: str | None = _param(None, "LAN folder that output/<run_id>/ is synced down to (empty = sync_from; "
                                       "nothing else there is touched)", section=_STORAGE, shown="sync_from")
    budget_usd: float | None = _param(None, "Cap in USD (empty = no cap): the run is refused if past runs of the "
                                            "macro say it would cost more, and the array is cancelled when the "
                                            "spend reaches it (status 'budget exceeded')", section=_COST, gt=0)
    hourly_rate_usd: float = _param(0.0, "existing/local: USD per task-hour (your facility's charge); "
                                         "parallelcluster uses EC2 prices", section=_COST, ge=0)
    slack_conn_id: str | None = _param(None, "Slack connection (slackwebhook or slack API) for start/end "
                                             "messages (empty = sciops_slack if it exists, else no messages)",
                                       section=_COST, shown="sciops_slack", pattern=WORD.pattern)

    @field_validator("backend", "launcher", "qc_images")
    @classmethod
    def _one_of(cls, v: str, info: ValidationInfo) -> str:
        choices = {"backend": BACKENDS, "launcher": LAUNCHERS, "qc_images": QC_MODES}[info.field_name]
        if v not in choices:
            raise ValueError(f"unknown {info.field_name} {brief(v)}; choose one of: {', '.join(choices)}")
        return v

    @field_serializer("cluster")
    def _cluster_keys_set(self, v: ClusterSettings) -> dict[str, Any]:
        return v.given()   # {} when unset, as the form, project.yaml and run.json show it

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


#: Built-in defaults (``project`` has none: it is required).
DEFAULTS: dict[str, Any] = {name: (lambda d: d.given() if isinstance(d, ClusterSettings) else d)(
                                f.get_default(call_default_factory=True))
                            for name, f in RunConfig.model_fields.items() if name != "project"}
#: What project.yaml may say about the project itself (not a run parameter): ``nightly: true`` opts the
#: project in to the nightly DAG (``fiji_nightly``), which runs its macro over new images only.
PROJECT_SETTINGS = {"nightly": "Run this project's macro over its new images every night (fiji_nightly)"}
#: Fields a run's conf may set but project.yaml may not (they choose where the project is).
RUN_ONLY = tuple(name for name, f in RunConfig.model_fields.items()
                 if name != "project" and not (f.json_schema_extra or {}).get("project_yaml", True))
FIELDS = tuple(RunConfig.model_fields)


_NO_DEFAULT = object()


def given(name: str, value: Any) -> bool:
    """Whether a run's conf sets ``name``: not None, not an empty optional string, not the built-in default.

    The form sends every field, so "equal to the built-in default" is what "left alone" looks
    like (a number compares by value, ``0`` as ``0.0``; a boolean only to a boolean).
    """
    default = DEFAULTS.get(name, _NO_DEFAULT)
    if value is None or (value == "" and default is None):
        return False
    if isinstance(value, bool) or isinstance(default, bool):
        return not (type(value) is type(default) and value == default)
    return value != default


def merge(conf: dict[str, Any], project_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run conf over project.yaml over built-in defaults (see :func:`given` for "not given")."""
    return {**DEFAULTS, **{k: v for k, v in (project_defaults or {}).items() if v is not None},
            **{k: v for k, v in conf.items() if given(k, v)}}


def sources(conf: dict[str, Any], project_defaults: dict[str, Any] | None = None) -> dict[str, str]:
    """Where each parameter's value came from: ``run``, ``project.yaml`` or ``default``."""
    out = {name: "default" for name in DEFAULTS}
    out.update({k: "project.yaml" for k, v in (project_defaults or {}).items() if k in out and v is not None})
    out.update({k: "run" for k, v in conf.items() if k in out and given(k, v)})
    return out



def build(conf: dict[str, Any], project_defaults: dict[str, Any] | None = None) -> RunConfig:
    """Check the run's parameters; raise :class:`ConfigError` naming every bad field."""
    problems: list[tuple[str, str]] = []
    for where, given_keys in (("config", conf), ("project.yaml", project_defaults or {})):
        if len(given_keys) > MAX_CONF_KEYS:
            raise ConfigError([(where, f"has {len(given_keys):,} keys, more than the {MAX_CONF_KEYS} accepted; "
                                       "give only run parameters")])
    unknown = sorted(set(conf) - set(FIELDS), key=str)
    if unknown:
        problems += [(k if isinstance(k, str) and len(k) <= 100 else brief(k),
                      f"unknown parameter; known ones are: {', '.join(FIELDS)}") for k in unknown]
    problems += [(f"project.yaml:{k}", f"must be true or false (got {brief(v)})")
                 for k, v in (project_defaults or {}).items() if k in PROJECT_SETTINGS and not isinstance(v, bool)]
    project_defaults = {k: v for k, v in (project_defaults or {}).items() if k not in PROJECT_SETTINGS}
    bad_defaults = sorted(set(project_defaults) - set(DEFAULTS), key=str)
    problems += [(f"project.yaml:{brief(k) if not isinstance(k, str) or len(k) > 100 else k}",
                  "not a run default; remove it from project.yaml") for k in bad_defaults]
    problems += [(f"project.yaml:{k}", "chooses where the project is, so it cannot be set inside it; set it in the "
                                       "run's parameters") for k in RUN_ONLY if k in (project_defaults or {})]
    if not conf.get("project"):
        problems.append(("project", "is required: the name of a project folder under the storage root"))
    if problems:
        raise ConfigError(problems)
    merged = merge(conf, {k: v for k, v in (project_defaults or {}).items() if k in DEFAULTS})
    try:
        cfg = RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(messages.problems(exc, RunConfig)) from None
    problems = deployment_problems(cfg.model_dump()) + other_backend_problems(cfg, conf)
    if problems:
        raise ConfigError(problems)
    return cfg


def allowed_storage_roots() -> list[str]:
    """``SCIOPS_STORAGE_ROOT`` and ``SCIOPS_ALLOWED_STORAGE_ROOTS`` (comma-separated): deployment settings,
    written as :func:`deployment_problems` compares a run's root (a folder's ``file://`` dropped)."""
    from sciops.settings import setting

    roots = [setting("SCIOPS_STORAGE_ROOT", "")] + setting("SCIOPS_ALLOWED_STORAGE_ROOTS")
    return [r.strip().removeprefix("file://").rstrip("/") for r in roots if r.strip()]


def deployment_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """What the deployment does not let a run choose: other storage roots, other connections.

    ``values`` are the run's raw ``storage_root`` and connection ids (checked before the storage
    root is opened, so a refused root is never listed).
    """
    from sciops.settings import setting

    problems = []
    root = values.get("storage_root")
    if given("storage_root", root) and (not isinstance(root, str)
                                        or root.removeprefix("file://").rstrip("/") not in allowed_storage_roots()):
        problems.append(("storage_root", f"{root!r} is not a storage root this deployment allows; use the default "
                                         "(leave it empty) or ask the admin to add it to SCIOPS_ALLOWED_STORAGE_ROOTS"))
    extra = set(setting("SCIOPS_ALLOWED_CONN_IDS"))
    for name in ("ssh_conn_id", "aws_conn_id", "slack_conn_id"):
        value = values.get(name)
        if isinstance(value, str) and value and not CONN_ID_DEFAULT_ALLOW.match(value) and value not in extra:
            problems.append((name, f"connection {value!r} is not one a run may use: runs may name sciops_* "
                                   "connections and aws_default; the admin lists others in SCIOPS_ALLOWED_CONN_IDS"))
    return problems


def other_backend_problems(cfg: RunConfig, conf: dict[str, Any]) -> list[tuple[str, str]]:
    """A field of another backend, set in the run's conf, would be silently ignored: refuse it."""
    problems = []
    for name, value in conf.items():
        field = RunConfig.model_fields.get(name)
        backends = SECTION_BACKENDS.get((field.json_schema_extra or {}).get("section", "")) if field else None
        if backends and cfg.backend not in backends and given(name, value):
            problems.append((name, f"is for the {' or '.join(backends)} backend but this run's backend is "
                                   f"{cfg.backend!r}: set backend to {backends[0]!r} or leave {name} at its default"))
    return problems


def cluster_problems(cluster: Any) -> tuple[ClusterSettings | None, list[tuple[str, str]]]:
    """A ``cluster`` parameter given as a dict, checked by :class:`ClusterSettings` (problems named ``cluster.<key>``)."""
    try:
        return ClusterSettings.model_validate(cluster or {}), []
    except ValidationError as exc:
        return None, messages.problems(exc, RunConfig, ("cluster",))
