"""What the compute node and the Airflow side share: file layout, status lines, the manifest.

The node writes, under a run's work folder, files that the Airflow side reads (progress, collation,
costs, the array's watch), and reads the manifest that the Airflow side writes. This module is the
one definition of all of it, so the two sides cannot drift apart:

* the layout: where a task's status lines, counts, attempt summary, log, claim file and each
  image's output folder are (the ``*_path`` / ``*_dir`` functions below);
* the status-line format: one JSON object a line, appended; :data:`FINAL` or :data:`BEGIN`;
* the chunk tables (``sciops_node.tables``, re-exported here);
* the name of a unit of work read through Bio-Formats (:data:`UNIT_RE`);
* the JVM heap rule both sides use (:func:`heap_mb`: validate checks memory with it);
* the runner's exit codes, which the schedulers' accounting reports;
* the manifest (:class:`Manifest`): what ``plan`` writes and every task reads.

Standard library only: it runs on compute nodes, which have no Airflow. The Airflow side imports
it as ``sciops_node.contract`` (``plugins/sciops/__init__.py`` puts ``include/job`` on ``sys.path``, once).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from dataclasses import dataclass, field
from typing import Any

from .tables import RESULT_KEYS, SUMMARY_KEYS, ChunkTable, chunk_table_name, tables_cut_short, tables_dir

__all__ = [
    "Manifest", "write_json", "FINAL", "BEGIN", "EXIT_IMAGEJ_BROKEN", "EXIT_INTERRUPTED", "EXIT_DELETED",
    "heap_mb", "UNIT_RE", "unit_parts",
    "manifest_path", "status_dir", "STATUS_GLOB", "status_path", "count_path", "attempt_summary_path",
    "ATTEMPT_SUMMARY_GLOB", "claim_path", "images_dir", "image_output_dir", "logs_dir", "task_log_name",
    "task_log_path", "smoke_log_path",
    "RESULT_KEYS", "SUMMARY_KEYS", "tables_dir", "chunk_table_name", "ChunkTable", "tables_cut_short",
    "append_status", "read_statuses", "scan_statuses", "deaths_under",
]

# -- exit codes (a scheduler's accounting reports them; sciops.arrays.schedulers reads them) ----------------
#: ImageJ failed to start ``MAX_START_FAILURES`` times in a row (``sciops_node.chunk``).
EXIT_IMAGEJ_BROKEN = 3
#: The JVM was killed from outside (kill -9, the OOM killer): stop, let the scheduler resubmit.
EXIT_INTERRUPTED = 137
#: Grid Engine's ``qdel`` of a ``-notify`` job sends SIGUSR2 first: the runner stops with 128 + 12, which
#: tells a deletion from a kill in ``qacct`` (both are otherwise ``failed 100``).
EXIT_DELETED = 128 + signal.SIGUSR2

#: Final statuses; a ``begin`` line marks an image starting (the next attempt then knows which image was in
#: flight when its task died whole: :func:`deaths_under`).
FINAL = ("ok", "failed", "timeout")
BEGIN = "begin"


def heap_mb(granted_mb):
    """``-Xmx`` for a task granted ``granted_mb`` of memory.

    The JVM needs room beyond its heap (metaspace, threads, AWT, native buffers):
    keep at least 300 MB or 20 % of the grant outside the heap, never go below 128 MB.
    """
    return max(128, min(granted_mb - 300, int(granted_mb * 0.8)))


#: A unit of work read through Bio-Formats: ``<file>#<series>`` (0-based, as Bio-Formats counts),
#: ``<file>#<series>c<channel>`` when each channel is a unit of its own (1-based, as ImageJ counts).
#: Named groups: collation gives the same pattern to pyarrow (RE2 reads this syntax too).
UNIT_RE = re.compile(r"^(?P<file>.+)#(?P<series>\d+)(?:c(?P<channel>\d+))?$")


def unit_parts(unit):
    """``(file, series, channel)`` of a unit of work; series and channel None for a plain image."""
    m = UNIT_RE.match(unit)
    if not m:
        return unit, None, None
    return m.group(1), int(m.group(2)), (int(m.group(3)) if m.group(3) else None)


# -- layout: where everything is under a run's folder (``run_dir``) and its ``work`` folder ---------
# One function per kind of file, so each name is built in one place (the Airflow side's too).

def manifest_path(work):
    """The run's manifest (:meth:`Manifest.dump` writes it, each task reads it)."""
    return os.path.join(work, "manifest.json")


def status_dir(work):
    """A task's status lines, counts, attempt summaries and claim live here."""
    return os.path.join(work, "status")


#: Every task's status file in :func:`status_dir` (the task number is ``name[5:9]``).
STATUS_GLOB = "task-*.jsonl"
#: Every attempt summary in :func:`status_dir`.
ATTEMPT_SUMMARY_GLOB = "task-*.attempt-*.json"


def status_path(work, task_id):
    return os.path.join(status_dir(work), "task-%04d.jsonl" % task_id)


def count_path(work, task_id):
    """A task's running counts (progress reads one small file a task, not every status line)."""
    return os.path.join(status_dir(work), "task-%04d.count.json" % task_id)


def attempt_summary_path(work, task_id, attempt):
    """One attempt's summary (host, start, end, exit, ImageJ version, ...): written when the task starts
    (``end``/``exit`` null) and again when it ends, so a task killed outright still leaves its start."""
    return os.path.join(status_dir(work), "task-%04d.attempt-%d.json" % (task_id, attempt))


def claim_path(work, task_id):
    """Which runner runs chunk ``task_id``'s images now (chaining: ``sciops_node.claims``)."""
    return os.path.join(status_dir(work), "task-%04d.claim" % task_id)


def images_dir(work):
    return os.path.join(work, "images")


def memo_dir(work):
    """Bio-Formats' memo files of the run's files (``SciopsSeries.java`` says how they are kept and invalidated):
    validate's probe writes them, the tasks that open the files read them."""
    return os.path.join(work, "bfmemo")


def image_output_dir(work, image):
    """An image's (a unit's) own output folder: the macro's ``output``."""
    return os.path.join(images_dir(work), image)


def logs_dir(run_dir):
    """Task logs: the runner's own and the scheduler's stdout/stderr files."""
    return os.path.join(run_dir, "logs")


def task_log_name(task_id, attempt):
    """The file name of a task attempt's log (the CLI finds it in storage by this name)."""
    return "task-%04d.attempt-%d.log" % (task_id, attempt)


def task_log_path(run_dir, task_id, attempt):
    return os.path.join(logs_dir(run_dir), task_log_name(task_id, attempt))


def smoke_log_path(run_dir):
    """The log of a smoke or probe run (``--images``), which is no task of the array."""
    return os.path.join(logs_dir(run_dir), "smoke.log")


# -- status lines: one JSON object a line, appended -------------------------------------------------
def append_status(path, rec, sync=True):
    """Append one status line (one write with O_APPEND: whole or absent after a kill); ``sync``: fsync it
    (a final status; a ``begin`` line is not: a killed process's writes survive it, and a lost node's
    deaths do not count anyway)."""
    line = json.dumps(rec, sort_keys=True) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _records(path):
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill: the image will be redone
    except FileNotFoundError:
        return


def read_statuses(path):
    """Final status per image from a status file (the last final line for an image wins)."""
    return {rec["image"]: rec for rec in _records(path) if rec.get("status") in FINAL}


def scan_statuses(path):
    """``(read_statuses(path), deaths_under(path))`` in one read; ``begin`` lines are parsed only
    when an image lacks a final status (what collation of a large run reads once per task)."""
    final, begins = {}, []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if '"status": "begin"' in line:
                    begins.append(line)
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("status") in FINAL:
                    final[rec["image"]] = rec
    except FileNotFoundError:
        return {}, {}
    began = set()
    for line in begins:
        image = _image_of(line)
        if image is not None and image not in final:
            began.add(image)
    return final, (deaths_under(path) if began else {})


def _image_of(line):
    try:
        return json.loads(line).get("image")
    except ValueError:
        return None


def deaths_under(path, lost=(), exclude=()):
    """Per image without a final status: the attempts that began it and never ended it.

    Each is a task (or JVM) that died while the image ran; attempts in ``lost`` (node lost)
    and ``exclude`` (the attempt running now) do not count.
    """
    began, ended = {}, {}
    for rec in _records(path):
        attempt = rec.get("attempt")
        if rec.get("status") == BEGIN:
            began.setdefault(rec["image"], set()).add(attempt)
        elif rec.get("status") in FINAL:
            ended.setdefault(rec["image"], set()).add(attempt)
    skip = set(lost) | set(exclude)
    return {img: len(attempts - ended.get(img, set()) - skip) for img, attempts in began.items()
            if img not in ended and attempts - skip}


def write_json(path, doc, indent=None):
    """``doc`` as JSON at ``path``, replaced whole (a reader never sees half of it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=indent)
    os.replace(tmp, path)


# -- the manifest --------------------------------------------------------------------------------------
#: Keys every manifest has (plan's, validate's smoke run's, the Bio-Formats probe's, the tests').
MANIFEST_REQUIRED = ("run_dir", "work_dir", "chunks")
#: Keys a task needs to start a JVM: a manifest only for bookkeeping (a test, a benchmark) may lack them.
MANIFEST_TO_LAUNCH = ("input_dir", "macro_path", "driver_path", "launcher")


@dataclass
class Manifest:
    """What a run's tasks run: written by ``plan`` (``work/manifest.json``), read by each task and by the
    Airflow side (``run_array``, collation, progress). Paths are as the compute nodes see them.

    On disk it is a plain JSON object, one key a field; :meth:`to_dict` gives that object back.
    Keys this class does not know are kept in :attr:`extra` and written back as they were, not refused:
    a load and dump must not lose what another writer put there (tests add keys for their fake runners),
    and a manifest is only ever written by SciOps code, so an unknown key is newer code's, not a user's
    typo to catch (a unit test checks that every key ``plan`` writes is a field); refusing it would fail
    a run for a key the runner does not need. Values are not converted or checked: the runner reads them
    as it always has (``float(image_timeout_s)``, ...).
    """

    # -- every manifest (MANIFEST_REQUIRED) --
    run_dir: str                    #: the run's folder: ``logs/``, ``work/``
    work_dir: str                   #: ``<run_dir>/work``: status, images, tables, job files
    chunks: list                    #: one list of units (relative to input_dir) per array task, in task order
    # -- what a task needs to launch ImageJ (MANIFEST_TO_LAUNCH; see require_launch) --
    input_dir: str | None = None    #: the project's input folder
    macro_path: str | None = None   #: the macro ImageJ runs (``work/job/<macro>[.headless].ijm``)
    driver_path: str | None = None  #: ``work/job/driver.ijm``
    launcher: dict | None = None    #: how to start ImageJ (sciops_node.jvm): kind, java, ij_jar, fiji, xvfb, ...
    # -- how each image runs --
    macro_args: dict = field(default_factory=dict)    #: ``key=value`` lines of each image's argument
    macro_argument: str | None = None                 #: a template of the argument instead (units.argument_for)
    channel: str = "all"                              #: Bio-Formats units: the channel the macro sees
    expected_outputs: list = field(default_factory=lambda: ["*.csv"])   #: file names/globs an ok image must leave
    memory_mb: int = 2048                             #: the task's memory grant; the heap is heap_mb() of it
    image_timeout_s: float = 600                      #: an image running longer is killed: "timeout"
    stall_seconds: float = 60                         #: no output and an idle CPU this long: a hung JVM
    unreadable: dict = field(default_factory=dict)    #: unit -> why validate could not read it: recorded failed
    scratch_dir: str | None = None                    #: where the JVM's scratch goes (None: the system's temp dir)
    qc_images: str = "sample"                         #: QC overlays: all, sample or none (sciops_node.qc)
    #: files read through Bio-Formats: the folder of their memo files (memo_dir); None: the run has no such unit
    bioformats_memo: str | None = None
    # -- the Airflow side's (the node does not read these) --
    run_id: str = ""
    project: str = ""
    max_attempts: int = 3           #: submissions of a failed chunk, the first included
    backend: str = "local"
    backend_options: dict = field(default_factory=dict)
    budget: dict | None = None      #: the spend cap and rates the array's watch follows
    plan_id: str | None = None      #: new each time plan runs: in the job names (sciops.arrays.run.job_name)
    airflow_run_id: str = ""        #: the DAG run's own id (the sweeper asks Airflow whether it still runs)
    dag_id: str = ""                #: the DAG it is a run of
    #: keys this class does not know, kept as they were
    extra: dict = field(default_factory=dict)

    #: Left out of :meth:`to_dict` when None: None means the same as absent, and plan never writes them.
    _OMIT_WHEN_NONE = ("scratch_dir", "bioformats_memo")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Manifest:
        """The manifest of a JSON object; ValueError when it lacks a key of :data:`MANIFEST_REQUIRED`."""
        missing = [k for k in MANIFEST_REQUIRED if k not in doc]
        if missing:
            raise ValueError("manifest lacks %s" % ", ".join(missing))
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in doc.items() if k in known},
                   extra={k: v for k, v in doc.items() if k not in known})

    @classmethod
    def of(cls, manifest: Manifest | dict[str, Any]) -> Manifest:
        """A Manifest as it is, or one of a dict (tests and benchmarks hand the runner a dict)."""
        return manifest if isinstance(manifest, cls) else cls.from_dict(manifest)

    @classmethod
    def load(cls, path: str) -> Manifest:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field (defaults of keys the source lacked included) and the extra keys.

        ``from_dict(d).to_dict() == d`` for a manifest that has every key (as ``plan`` writes them).
        Shares the lists and dicts it holds (``chunks`` may list 100,000 images): copy before changing them.
        """
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for key in self._OMIT_WHEN_NONE:
            if doc[key] is None:
                del doc[key]
        doc.update(self.extra)
        return doc

    def dump(self, path: str) -> str:
        """Write :meth:`to_dict` to ``path`` whole (as plan's ``write_json``: indented by 1)."""
        write_json(path, self.to_dict(), indent=1)
        return path

    def require_launch(self):
        """Raise ValueError naming the keys of :data:`MANIFEST_TO_LAUNCH` this manifest lacks."""
        missing = [k for k in MANIFEST_TO_LAUNCH if getattr(self, k) is None]
        if missing:
            raise ValueError("manifest lacks %s, which a task needs to start ImageJ" % ", ".join(missing))
