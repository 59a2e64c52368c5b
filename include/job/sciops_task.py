#!/usr/bin/env python3
"""SciOps task runner: process one chunk of images in one ImageJ JVM.

Runs ON the compute node (or the Airflow worker for the ``local`` backend), so it
uses the Python 3 standard library only: compute nodes have no Airflow.

One array task = one chunk = one JVM that calls the user's macro once per image
(through ``driver.ijm``). The runner, not ImageJ's exit code, decides what
happened to each image:

* ``ok``       the driver printed the image's END line, the expected outputs exist
               and the log between BEGIN and END holds no error;
* ``failed``   an error in the log, missing outputs, or a stalled JVM (ImageJ 1
               pops a modal dialog on any macro error and waits forever: no
               output and an idle CPU for ``stall_seconds`` means exactly that);
* ``timeout``  the image ran longer than ``image_timeout_s``.

After a stall, a timeout or a crash the JVM is killed and restarted on the
images that remain. Each final status is appended as one JSON line to
``status/task-NNNN.jsonl``; a resubmitted task skips images that already have
one, so a killed task loses at most the image it was working on.

A ``begin`` line is appended when an image starts, so the next attempt knows which
image was in flight when a task died whole (a scheduler's memory kill takes the runner
with the JVM): that image goes last, after the chunk's untried images, and an image
in flight at two deaths is marked failed instead of taking its chunk down again.
Deaths in attempts the scheduler lost to a node (``SCIOPS_LOST=task.attempt:...``,
set by the resubmission) are not the image's fault and do not count.

Each ``ok`` image's tables are appended, as the image ends, to its attempt's chunk tables
(``tables/task-NNNN.attempt-K.results.csv`` and ``...summary.csv``; a new ``.partP`` file
when an image's columns differ from the file's header), prefixed with ``image``, ``task``
and ``attempt``. The status line records each table's file and the byte offset its rows end
at, written after the rows (only the status line is fsynced: one fsync an image): collation
reads thousands of chunk files instead of a file per image, and a file shorter than a recorded
offset (a node lost before its write reached shared storage) is detected, its images re-run by
the next attempt or reported. ``status/task-NNNN.count.json`` holds the task's running counts
(progress reads one small file per task, not every status line), rewritten at most once a second.
The runner's CPU is taken from the JVMs beside it (a 2-core node runs two): over 1,000 images here it
used 4.3-4.8 s, against 5.9 s with an fsync per table and per begin line and count.json per image.

The attempt summary (``status/task-NNNN.attempt-K.json``) is written when the task
starts (``end``/``exit`` null) and again when it ends, so a task killed outright
still leaves its start for the run's cost.

Usage::

    sciops_task.py --manifest WORK/manifest.json [--task N] [--attempt K]
    sciops_task.py --smoke --manifest ... --images a.tif b.tif   # validate's smoke run

The task number comes from ``--task`` or the scheduler's environment
(``SCIOPS_TASK_ID``, ``SGE_TASK_ID``, ``SLURM_ARRAY_TASK_ID``).

What the node shares with the Airflow side (the file layout under ``work/``, status lines, chunk
tables, the manifest, the heap rule, exit codes) is ``sciops_node.contract``, in the package beside
this file (both are copied into each run's ``work/job/``).
"""
# ruff: noqa: E402 (the package is imported after the bytecode switch)
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

if __name__ == "__main__":
    # started from a run's work/job/ (shared storage, synced with the run's folder): the package below is
    # imported without leaving a __pycache__ there (compiling it costs ~0.01 s a task)
    sys.dont_write_bytecode = True

from sciops_node.contract import (  # noqa: F401 (re-exported: the Airflow side and tests use them)
    BEGIN, EXIT_DELETED, EXIT_IMAGEJ_BROKEN, EXIT_INTERRUPTED, FINAL, RESULT_KEYS, SUMMARY_KEYS, UNIT_RE,
    ChunkTable, Manifest, _records, append_status, attempt_summary_path, claim_path, count_path, deaths_under,
    heap_mb, image_output_dir, logs_dir, read_statuses, scan_statuses, smoke_log_path, status_path,
    tables_cut_short, tables_dir, task_log_path, unit_parts, write_json,
)

#: Lines that mean "this image went wrong" even when ImageJ carries on.
ERROR_RE = re.compile(
    r"(Exception|Error:|File not found|Unsupported format|not supported|Unrecognized command"
    r"|Macro Error|FileInfo parameter error|OutOfMemory|not a valid|Cannot open)",
    re.IGNORECASE,
)
#: A JVM that uses less CPU than this share of one core counts as idle.
IDLE_CPU_SHARE = 0.03
#: After an error line, how long an idle JVM may sit before we call it stuck.
ERROR_GRACE_S = 2.0
#: Heaps up to this size get the serial garbage collector (imagej1 launcher).
SERIAL_GC_MAX_MB = 8192
#: count.json is rewritten at most this often (and when the task ends).
COUNTS_EVERY_S = 1.0
#: JVM start failures in a row before the task gives up (exit code 3).
MAX_START_FAILURES = 2
#: scancel (and a node's shutdown) signals every process of a task at once: the JVM, or the Xvfb under it,
#: can end a moment before this runner's own handler runs. A JVM that ends under an image waits this
#: long for that handler before the image is blamed.
STOP_GRACE_S = 1.0
#: A JVM ended by one of these without our asking was stopped from outside, not by its image.
OUTSIDE_SIGNALS = {-signal.SIGKILL: "SIGKILL", -signal.SIGTERM: "SIGTERM", -signal.SIGHUP: "SIGHUP",
                   -signal.SIGINT: "SIGINT"}
#: An image in flight when its task died this many times (lost nodes not counted) is marked failed.
DEATHS_TO_BLAME = 2

TASK_ENV_VARS = ("SCIOPS_TASK_ID", "SGE_TASK_ID", "SLURM_ARRAY_TASK_ID")
#: The only variables a macro's JVM inherits (macros are user code: the worker's AWS keys, SSH
#: agent, Slack token and Airflow settings stay out). HOME and TMPDIR point at the JVM's scratch.
MACRO_ENV_ALLOW = ("PATH", "LANG", "LANGUAGE", "TZ", "JAVA_HOME", "USER", "LOGNAME", "SHELL", "TERM",
                   "SCIOPS_TASK_ID", "SCIOPS_JOB_ID", "SCIOPS_ATTEMPT", "SGE_TASK_ID", "JOB_ID",
                   "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")


#: prctl(PR_SET_PDEATHSIG): the kernel signals a child when the process that made it dies.
PR_SET_PDEATHSIG = 1
SCRATCH_PREFIX = "sciops-task"


def die_with(parent_pid):
    """A ``preexec_fn``: the child (JVM, Xvfb) is SIGKILLed when the runner dies, however it dies.

    They run in sessions of their own (the runner kills a stuck JVM's whole group), so a
    ``kill -9`` of the runner, the OOM killer or a scheduler that kills only the task's
    process would otherwise leave them running, Xvfb for ever. Linux only; elsewhere a no-op.
    """
    def preexec():
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:   # the runner died between fork and prctl
            os._exit(1)
    return preexec


def remove_stale_scratch(base=None):
    """Remove scratch folders of runners that are gone (a SIGKILL leaves them; the name holds the pid)."""
    base = base or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")   # sciops-task<N>-<pid>-<random>
        if not name.startswith(SCRATCH_PREFIX) or len(parts) < 4 or not parts[2].isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue   # alive (another user's, or ours still running)


def macro_env(environ, home, tmp, display=None):
    """The environment a macro's JVM gets: :data:`MACRO_ENV_ALLOW` and ``LC_*`` only."""
    env = {k: v for k, v in environ.items() if k in MACRO_ENV_ALLOW or k.startswith("LC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=home, TMPDIR=tmp)
    if display:
        env["DISPLAY"] = display
    return env


def task_id_from_env(environ=None):
    """The chunk this task runs, from the scheduler's array index, or None.

    ``SCIOPS_TASK_MAP=2:5:9`` (a resubmission of scattered chunks as array 1-3) maps
    array index i to the i-th chunk listed.
    """
    environ = os.environ if environ is None else environ
    for var in TASK_ENV_VARS:
        value = environ.get(var, "")
        if value.isdigit():  # SGE sets "undefined" outside arrays
            index = int(value)
            mapping = environ.get("SCIOPS_TASK_MAP", "")
            if mapping and var != "SCIOPS_TASK_ID":
                return int(mapping.replace(",", ":").split(":")[index - 1])
            return index
    return None


def chain_from_env(task_id, environ=None):
    """The array's tasks after ``task_id`` this runner may chain (``SCIOPS_CHAIN=1,2,3``, set by the local
    backend: one machine, where a claim file's holder can be seen alive), or None: chaining off."""
    environ = os.environ if environ is None else environ
    tasks = [int(t) for t in environ.get("SCIOPS_CHAIN", "").split(",") if t.strip().isdigit()]
    if not tasks or task_id not in tasks:
        return None
    return tasks[tasks.index(task_id) + 1:]


#: Lines a macro prints for one image that its log.txt keeps (a runaway print loop stays bounded).
LOG_LINES_MAX = 10_000


def read_csv_rows(path):
    """(header, rows) of a CSV the macro wrote; ImageJ's unnamed row-number column dropped.

    ``([], [])`` for a missing or empty file; blank lines skipped; short rows padded.
    """
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            lines = [r for r in csv.reader(fh) if r]
    except FileNotFoundError:
        return [], []
    if not lines:
        return [], []
    keep = [i for i, c in enumerate(lines[0]) if c.strip() and not c.startswith("Unnamed:")]
    header = [lines[0][i] for i in keep]
    return header, [[r[i] if i < len(r) else "" for i in keep] for r in lines[1:]]


def argument_for(template, image_path, output, macro_args, opened=None):
    """The string one image's macro gets from ``getArgument()``.

    No template: ``input=...``, ``output=...`` and each macro argument as ``key=value`` lines (what
    the shipped macros and ``#@`` parameters read). A template (``macro_argument``): that text with
    ``{input}``, ``{output}``, ``{name}`` (the file's name), ``{stem}`` (without extension) and
    ``{key}`` of each macro argument filled in, for a lab macro that splits its own argument string.
    Macro argument values may name ``{input}`` etc. too (a ``#@ File image`` parameter: ``{input}``).

    ``opened``: for a unit read through Bio-Formats, ``{"input": the plain TIFF the driver writes of
    the series (and channel), "source": the file, "series": ..., "channel": ...}``; the macro's
    ``input`` is then that TIFF (a plain ``open(input)`` works), ``name``/``stem`` the file's.
    """
    name = image_path.rsplit("/", 1)[-1]
    fields = {"input": image_path, "output": output, "name": name, "stem": name.rsplit(".", 1)[0]}
    extra_lines = []
    if opened:
        fields.update({k: str(v) for k, v in opened.items()})
        extra_lines = ["%s=%s" % (k, fields[k]) for k in ("source", "series", "channel")]

    def fill(text, extra):
        for key, value in list(extra.items()) + list(fields.items()):
            text = text.replace("{" + key + "}", value)
        return text

    args = [(k, fill(str(v), {})) for k, v in sorted(macro_args.items())]
    if template is None:
        return "\n".join(["input=" + fields["input"], "output=" + output] + extra_lines + ["%s=%s" % kv for kv in args])
    return fill(template, dict(args))


#: A line a macro printed that reads as a measurement: ``count: 42``, ``area = 3.5``, ``ratio=0.5``.
LOG_MEASURE = re.compile(r"^\s*([A-Za-z][\w .%()/-]{0,60}?)\s*[:=]\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def keep_log(outdir, lines):
    """What the macro printed for this image: ``log.txt`` in its output folder, and, when the macro
    wrote no ``summary.csv``, its ``name: number`` lines as one (macros that report by print())."""
    if not lines:
        return
    with open(os.path.join(outdir, "log.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    summary = os.path.join(outdir, "summary.csv")
    found = {}
    for line in lines:
        m = LOG_MEASURE.match(line)
        if m:
            found[m.group(1).strip()] = m.group(2)
    if found and not os.path.exists(summary):
        with open(summary, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(found))
            w.writerow(list(found.values()))


def lost_attempts(task_id, environ=None):
    """The attempts of ``task_id`` the scheduler lost to a node (``SCIOPS_LOST=3.2:5.2`` = task.attempt)."""
    environ = os.environ if environ is None else environ
    out = set()
    for pair in filter(None, environ.get("SCIOPS_LOST", "").split(":")):
        task, _, attempt = pair.partition(".")
        if task.isdigit() and attempt.isdigit() and int(task) == task_id:
            out.add(int(attempt))
    return out


#: A claim file left empty this long (its maker died between creating and writing it) is stale.
CLAIM_EMPTY_STALE_S = 5.0
#: How often a runner whose chunk another runner is running looks whether it is done.
CLAIM_WAIT_S = 0.2


def try_claim(work, task_id, by):
    """Hold chunk ``task_id`` (local backend chaining): create its claim file, or take over a dead runner's.

    True when this process holds it now; False while another live runner on this machine does.
    """
    path = claim_path(work, task_id)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        except FileExistsError:
            if claim_live(path):
                return False
            try:
                os.unlink(path)   # its runner is gone (kill -9): the chunk is free again
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "task": by}, fh)
        return True
    return False


def claim_live(path):
    """Is the runner named in a claim file alive (on this machine: chaining is the local backend's)?"""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    try:
        holder = json.loads(text)
    except ValueError:
        return age < CLAIM_EMPTY_STALE_S   # being written now, or its maker died right after making it
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def release_claim(work, task_id):
    """Remove this process's claim of ``task_id`` (not another's)."""
    path = claim_path(work, task_id)
    try:
        with open(path, encoding="utf-8") as fh:
            if json.load(fh).get("pid") != os.getpid():
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass


def outputs_missing(outdir, expected):
    """Names from ``expected`` (file names or glob patterns) with no file in outdir."""
    try:
        present = os.listdir(outdir)
    except FileNotFoundError:
        present = []
    return [pat for pat in expected if not fnmatch.filter(present, pat)]


def cpu_ticks(pid):
    """User+system CPU ticks of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


class Xvfb:
    """A private X server for one task: ImageJ 1 needs a display even in batch mode.

    ``-displayfd`` lets Xvfb pick a free display number itself, so concurrent
    tasks on one node never race for the same one (``xvfb-run -a`` does race).
    """

    def __init__(self, binary="Xvfb"):
        self.binary = binary
        self.proc = None
        self.display = None
        self._rfd = None

    def start(self):
        """Start the server; :meth:`wait` for its display (the runner prepares the JVM's job meanwhile)."""
        rfd, wfd = os.pipe()
        self.proc = subprocess.Popen(
            [self.binary, "-displayfd", str(wfd), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
            pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with(os.getpid()),
        )
        os.close(wfd)
        self._rfd = rfd
        return self

    def wait(self):
        """The display (``:N``) once the server accepts connections."""
        if self.display is not None:
            return self.display
        rfd, self._rfd = self._rfd, None
        data = b""
        deadline = time.time() + 20
        while not data.endswith(b"\n") and time.time() < deadline:
            ready, _, _ = select.select([rfd], [], [], 0.5)
            if ready:
                chunk = os.read(rfd, 64)
                if not chunk:
                    break
                data += chunk
        os.close(rfd)
        if not data.strip():
            self.stop()
            raise RuntimeError("Xvfb did not start (is the xvfb package installed?)")
        self.display = ":" + data.decode().strip()
        return self.display

    def stop(self):
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def make_folders(folders):
    """Make each folder (its parent exists); one made meanwhile by the driver is fine."""
    for folder in folders:
        try:
            os.mkdir(folder)
        except OSError:   # made by the driver; or it cannot be, and the driver's makeDirectory fails too
            pass


def launcher_argv(launcher, xmx, home, tmp, driver, jobfile):
    """The command that starts one JVM running ``driver`` over ``jobfile``.

    ``-port0`` turns off ImageJ's single-instance listener, and a private
    ``user.home`` / ``java.io.tmpdir`` per task keeps IJ_Prefs and temp files apart,
    so several tasks can share a node.
    """
    props = ["-Duser.home=" + home, "-Djava.io.tmpdir=" + tmp]
    kind = launcher.get("kind", "imagej1")
    if kind == "imagej1" and launcher.get("plugins_dir"):   # Bio-Formats (scripts/bioformats.sh)
        props.append("-Dplugins.dir=" + launcher["plugins_dir"])
    if kind == "fiji":
        return [launcher["fiji"], "--headless", "--console", "--mem=%dm" % xmx] + props + [
            "--", "-port0", "-batch", driver, jobfile]
    if kind == "imagej1":
        # the serial collector: a task's JVM has a core or two and a heap of a few GB, and the default's
        # parallel GC threads take CPU from the JVM beside it. Measured on this 2-core machine, count_nuclei
        # on BBBC002 ×3 (150 images, one JVM): 10.4-10.7 s against 11.3 s, 10 % less CPU; two JVMs of
        # 1,000 tiny images at once: 23.9 s against 24.5-29.6 s. (C1 only, -XX:TieredStopAtLevel=1, was
        # faster on tiny images but 50 % slower on BBBC002's: not used.)
        gc = ["-XX:+UseSerialGC"] if xmx <= SERIAL_GC_MAX_MB else []
        return [launcher.get("java", "java"), "-Xmx%dm" % xmx] + gc + props + [
            "-jar", launcher.get("ij_jar", "/usr/share/java/ij.jar"), "-port0", "-batch", driver, jobfile]
    raise ValueError("unknown launcher kind %r (use 'imagej1' or 'fiji')" % kind)


def bioformats_version(launcher):
    """The version of the Bio-Formats jar an ImageJ 1 launch is given (its manifest), or None.

    The manifest is among a jar's first entries: read from their local headers (~1 ms), not through
    the 45 MB jar's central directory of ~20,000 entries (zipfile: 0.19 s, once per task).
    """
    import struct
    import zlib

    if launcher.get("bioformats_version") or not launcher.get("plugins_dir"):
        return launcher.get("bioformats_version")
    path = os.path.join(launcher["plugins_dir"], "plugins", "bioformats_package.jar")
    text = None
    try:
        with open(path, "rb") as fh:
            for _ in range(4):
                head = fh.read(30)
                if len(head) < 30 or head[:4] != b"PK\x03\x04":
                    break
                _, _, flags, method, _, _, _, csize, _, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", head)
                name = fh.read(nlen)
                fh.seek(xlen, 1)
                if flags & 8:   # sizes follow the data: cannot skip this entry
                    break
                if name == b"META-INF/MANIFEST.MF":
                    data = fh.read(csize)
                    text = (zlib.decompressobj(-15).decompress(data) if method == 8 else data).decode("utf-8", "replace")
                    break
                fh.seek(csize, 1)
        if text is None:
            import zipfile

            with zipfile.ZipFile(path) as jar:
                text = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (OSError, KeyError, ValueError, zlib.error, struct.error):
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Implementation-Version:")), None)


class ChunkRunner:
    """Run images through JVMs until each has a final status.

    :param manifest: the run's :class:`~sciops_node.contract.Manifest` (or its dict: tests, benchmarks).
    :param task_id: 1-based array index; ``manifest.chunks[task_id - 1]`` is the chunk.
    :param attempt: the scheduler-level attempt number (1 for the first submission).
    :param log: a writable text file for the JVM output and runner notes.
    """

    def __init__(self, manifest, task_id, attempt, log, images=None, status_file=None, chain=None):
        self.m = manifest = Manifest.of(manifest)
        self.task_id = task_id
        self.attempt = attempt
        self.log = log
        self.work = manifest.work_dir
        self.images = list(images if images is not None else manifest.chunks[task_id - 1])
        self.chunk = set(self.images)
        self.status_file = status_file or status_path(self.work, task_id)
        #: no earlier attempt left a line: no output folder of this chunk can hold a killed attempt's files
        self.fresh = not os.path.exists(self.status_file)
        self.expected = manifest.expected_outputs or ["*.csv"]
        self.timeout = float(manifest.image_timeout_s)
        self.stall = float(manifest.stall_seconds)
        self.version = None
        self.jvm_starts = 0
        self.host = socket.gethostname()
        self.scratch = None
        self.error = ""            # why the task ended early, for the attempt summary
        self.interrupted = False
        self.proc = None           # the JVM running now
        self.tables = {kind: ChunkTable(self.work, task_id, attempt, kind) for kind in ("results", "summary")}
        self.counts = {}           # final status per image of the chunk, for count.json
        self.counts_at = 0.0       # when count.json was last written
        #: chaining (local backend): the array's later tasks this runner may take into its JVM; None = off
        self.chain = list(chain) if chain is not None else None
        self.chained = []          # tasks whose images this runner's JVMs ran
        self.children = {}         # task -> its ChunkRunner, for the chunks the JVM running now was handed
        self.by = {}               # a chained chunk's: {"by": the task whose runner's JVM runs it}

    # -- bookkeeping -------------------------------------------------------------
    def note(self, msg, *args):
        self.log.write("[sciops %s] %s\n" % (time.strftime("%H:%M:%S"), msg % args))
        self.log.flush()

    def record(self, image, status, seconds, error="", **extra):
        rec = {"image": image, "status": status, "seconds": round(seconds, 3), "error": error,
               "task": self.task_id, "attempt": self.attempt, "host": self.host, "jvm": self.jvm_starts, **self.by,
               **extra}
        append_status(self.status_file, rec)
        self.counts[image] = status
        self.write_counts()
        # The status line on stdout is what a person tailing the scheduler log sees.
        print("%s\t%s\t%.2f\t%s" % (image, status, seconds, error), flush=True)
        return rec

    def write_counts(self, force=False):
        """``count.json``: at most once every COUNTS_EVERY_S (progress polls every few seconds), and at the end."""
        if self.status_file != status_path(self.work, self.task_id):
            return   # a smoke run's status file is its own
        now = time.time()
        if not force and now - self.counts_at < COUNTS_EVERY_S and len(self.counts) < len(self.chunk):
            return   # written again within the second, or when the chunk's last image ends
        self.counts_at = now
        done = [s for img, s in self.counts.items() if img in self.chunk]
        write_json(count_path(self.work, self.task_id),
                   {"task": self.task_id, "images": len(self.chunk), "done": len(done),
                    "ok": done.count("ok"), "attempt": self.attempt, "at": round(time.time(), 3)})

    def save_tables(self, image):
        """Append the image's results and first summary row to the attempt's chunk tables."""
        outdir = image_output_dir(self.work, image)
        header, rows = read_csv_rows(os.path.join(outdir, "results.csv"))
        tables = {}
        if rows:
            header = list(RESULT_KEYS) + ["macro_" + c if c in RESULT_KEYS else c for c in header]
            key = [image, str(self.task_id), str(self.attempt)]
            tables["results"] = self.tables["results"].append(header, [key + r for r in rows])
        s_header, s_rows = read_csv_rows(os.path.join(outdir, "summary.csv"))
        keep = [i for i, c in enumerate(s_header) if c not in SUMMARY_KEYS]
        if s_rows and keep:
            tables["summary"] = self.tables["summary"].append(
                ["image", "attempt"] + [s_header[i] for i in keep],
                [[image, str(self.attempt)] + [s_rows[0][i] for i in keep]])
        return len(rows), tables

    def begin(self, image):
        append_status(self.status_file, {"image": image, "status": BEGIN, "task": self.task_id,
                                         "attempt": self.attempt, "host": self.host, "at": round(time.time(), 3),
                                         **self.by}, sync=False)

    def earlier_deaths(self):
        return deaths_under(self.status_file, lost_attempts(self.task_id), exclude=(self.attempt,))

    # -- main loop ---------------------------------------------------------------
    def already_done(self):
        """Final statuses of earlier attempts, less the ``ok`` images whose chunk tables were cut short."""
        done = read_statuses(self.status_file)
        for img, rec in list(done.items()):
            cut = tables_cut_short(self.work, rec) if rec.get("status") == "ok" else []
            if cut:   # its rows never reached the disk whole: do it again
                self.note("%s: %s is %d bytes, its rows ended at byte %d: running it again", img, cut[0][0],
                          cut[0][2], cut[0][1])
                del done[img]
        return done

    def run(self):
        if self.chain is None:
            return self._run()
        waited = False
        while not try_claim(self.work, self.task_id, self.task_id):
            if not waited:
                self.note("another task's runner is running this chunk's images in its JVM (chained): waiting")
                waited = True
            time.sleep(CLAIM_WAIT_S)
        try:
            return self._run()
        finally:
            release_claim(self.work, self.task_id)

    def prepare(self):
        """The chunk's images left to run, in order (unreadable ones and ones blamed for deaths recorded failed)."""
        done = self.already_done()
        self.counts = {img: rec["status"] for img, rec in done.items()}
        self.write_counts(force=True)
        remaining = [img for img in self.images if img not in done]
        if len(remaining) < len(self.images):
            self.note("task %d: %d of %d images already done (by an earlier attempt, or another task's runner that "
                      "chained this chunk)", self.task_id, len(self.images) - len(remaining), len(self.images))
        unreadable = self.m.unreadable or {}
        for img in [img for img in remaining if img in unreadable]:   # validate found it unreadable (skip_unreadable)
            self.record(img, "failed", 0.0, unreadable[img])
            remaining.remove(img)
        deaths = self.earlier_deaths()
        for img in [img for img in remaining if deaths.get(img, 0) >= DEATHS_TO_BLAME]:
            self.record(img, "failed", 0.0, "the task died while processing this image in %d attempts (a memory "
                        "limit or the OOM killer?); the scheduler's words are in failures.csv" % deaths[img])
            remaining.remove(img)
        # an image in flight when the last attempt died goes last: the untried ones first
        suspects = [img for img in remaining if deaths.get(img)]
        if suspects:
            self.note("in flight when an earlier attempt died, run last: %s", ", ".join(suspects))
            remaining = [img for img in remaining if not deaths.get(img)] + suspects
        return remaining

    def _run(self):
        remaining = self.prepare()
        start_failures = 0
        remove_stale_scratch(self.m.scratch_dir)
        self.scratch = tempfile.mkdtemp(prefix="%s%d-%d-" % (SCRATCH_PREFIX, self.task_id, os.getpid()),
                                        dir=self.m.scratch_dir)
        xvfb = None
        try:
            if remaining:
                self.m.require_launch()   # a manifest for bookkeeping only (a test's) cannot start ImageJ
                if self.m.launcher.get("kind", "imagej1") == "imagej1":
                    xvfb = Xvfb(self.m.launcher.get("xvfb", "Xvfb")).start()   # starts while run_jvm prepares
            while remaining:
                finished = self.run_jvm(remaining, xvfb)
                if self.interrupted:
                    return EXIT_INTERRUPTED
                if not finished:
                    start_failures += 1
                    if start_failures >= MAX_START_FAILURES:
                        self.error = "ImageJ failed to start %d times in a row: %s" % (start_failures, self.error)
                        self.note("%s", self.error)
                        return EXIT_IMAGEJ_BROKEN
                    continue
                start_failures = 0
                remaining = [img for img in remaining if img not in finished]
        finally:
            # also on SIGTERM (scancel, qdel, a timeout), which main() turns into SystemExit
            if self.proc is not None and self.proc.poll() is None:
                self.kill(self.proc)
                self.proc.wait()
            self.end_children()   # a stop (SIGTERM) mid-JVM: the chunks it was handed go back
            if xvfb:
                xvfb.stop()
            shutil.rmtree(self.scratch, ignore_errors=True)
            remove_stale_scratch(self.m.scratch_dir)   # and what killed runners on this node left
            self.write_counts(force=True)
        return 0

    def unit_lines(self, images, fresh, key, parents, folders):
        """The job-file lines of ``images``: path, output folder, argument (and Bio-Formats series).

        ``fresh``: their output folders are made later (``parents``/``folders`` collect them); else any
        stale outputs of a killed attempt are removed now. ``key`` keeps Bio-Formats extracts apart.
        """
        out_lines = []
        template, args = self.m.macro_argument, self.m.macro_args
        for k, img in enumerate(images):
            out = image_output_dir(self.work, img)
            if fresh:
                parents.add(os.path.dirname(out))
                folders.append(out)
            else:
                shutil.rmtree(out, ignore_errors=True)  # stale outputs of a killed attempt
                os.makedirs(out)
            rel, series, channel = unit_parts(img)
            path = os.path.join(self.m.input_dir, rel)
            opened, how = None, ""
            if series is not None:   # the driver reads it through Bio-Formats into a plain TIFF
                channel = channel or self.m.channel or "all"
                extract = os.path.join(self.scratch, "units", "%s-%d.tif" % (key, k))
                opened = {"input": extract, "source": path, "series": series, "channel": channel}
                how = "\t%d\t%s\t%s" % (series, channel, extract)
            # the argument's line breaks as \x1f: the job file is one image per line
            out_lines.append("%s\t%s\t%s%s\n" % (path, out, argument_for(template, path, out, args, opened)
                                                  .replace("\n", "\x1f"), how))
        return "".join(out_lines)

    def extend(self, jobfile, step):
        """Chaining: hand the JVM the next chunk of the array that no runner holds and that has images left.

        The chunk is claimed (``status/task-NNNN.claim``) and its images written to ``<job>.more<step>``, which
        the driver reads after its current lines; its statuses, tables and counts are the chunk's own, as if
        its task had run it. ``<job>.end<step>`` when no chunk is left. Returns ``(runner, images)`` or None.
        A JVM start and its JIT's warm-up cost seconds (see ``AUTO_TASKS_PER_SLOT`` in sciops.project): a slot's runner
        that goes on with the array's next chunk in its warm JVM saves both, and the slots end together
        however long each chunk turned out.
        """
        while self.chain:
            task = self.chain.pop(0)
            if not try_claim(self.work, task, self.task_id):
                continue   # its own runner, or another slot's, has it
            child = ChunkRunner(self.m, task, self.attempt, self.log)
            child.by, child.jvm_starts = {"by": self.task_id}, self.jvm_starts   # in status lines: whose JVM ran it
            images = child.prepare()
            if not images:
                release_claim(self.work, task)
                continue
            parents, folders = set(), []
            text = self.unit_lines(images, child.fresh, "%d-%d" % (self.jvm_starts, task), parents, folders)
            for parent in sorted(parents):
                os.makedirs(parent, exist_ok=True)
            # the images' folders, while the JVM ends the image it runs (the driver makes one it reaches first)
            threading.Thread(target=make_folders, args=(folders,), daemon=True).start()
            tmp = jobfile + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, "%s.more%d" % (jobfile, step))
            self.children[task] = child
            if task not in self.chained:
                self.chained.append(task)
            self.note("chained task %d: its %d image(s) go on in this JVM", task, len(images))
            try:
                with open(task_log_path(self.m.run_dir, task, self.attempt), "a", encoding="utf-8") as fh:
                    fh.write("[sciops %s] %d image(s) of this task run in task %d's JVM (chained): see "
                             "task-%04d.attempt-%d.log\n" % (time.strftime("%H:%M:%S"), len(images), self.task_id,
                                                              self.task_id, self.attempt))
            except OSError:
                pass
            return child, images
        open("%s.end%d" % (jobfile, step), "w").close()
        return None

    def end_children(self):
        """The JVM has ended: release the chunks it was handed; one with images left goes back to the chain
        (a next JVM of this runner may take it again, or its own task runs it)."""
        for task, child in list(self.children.items()):
            child.write_counts(force=True)
            release_claim(self.work, task)
            if self.chain is not None and any(img not in child.counts for img in child.images):
                self.chain.insert(0, task)
        self.children = {}

    def run_jvm(self, images, xvfb=None):
        """Start one JVM on ``images``; return {image: status record} of those it finished.

        On a task's first attempt's first JVM (no status line yet: no output folder can hold a killed
        attempt's or JVM's files) the images' output folders are made by a thread while the JVM starts, and the driver
        makes one it reaches first: 500 mkdirs took 0.26 s here (0.5 ms each on this ext4; more on
        NFS), longer than the JVM's own start (0.2 s), before every task's first image.
        """
        self.jvm_starts += 1
        home = os.path.join(self.scratch, "home")
        tmp = os.path.join(self.scratch, "tmp")
        # A killed JVM leaves prefs locks and temp files: start each JVM from clean dirs.
        for d in (home, tmp):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        jobfile = os.path.join(self.scratch, "job-%d.txt" % self.jvm_starts)
        parents, folders = set(), []
        # only the attempt's first JVM: a later one reruns images an earlier JVM left half-written
        fresh = self.fresh and self.jvm_starts == 1
        with open(jobfile, "w", encoding="utf-8") as fh:
            fh.write("macro=%s\n" % self.m.macro_path)
            fh.write("args=%s\n" % "\t".join("%s=%s" % kv for kv in sorted(self.m.macro_args.items())))
            fh.write(self.unit_lines(images, fresh, "%d" % self.jvm_starts, parents, folders))
        chaining = bool(self.chain)
        if chaining:   # the driver waits for <job>.more<N> or <job>.end<N> after its lines (see extend)
            open(jobfile + ".chain", "w").close()
        os.makedirs(os.path.join(self.scratch, "units"), exist_ok=True)
        for parent in sorted(parents):
            os.makedirs(parent, exist_ok=True)
        maker = threading.Thread(target=make_folders, args=(folders,), daemon=True)
        maker.start()
        xmx = heap_mb(int(self.m.memory_mb))
        argv = launcher_argv(self.m.launcher, xmx, home, tmp, self.m.driver_path, jobfile)
        self.note("JVM %d on %d image(s): %s", self.jvm_starts, len(images), " ".join(argv))
        env = macro_env(os.environ, home, tmp, xvfb.wait() if xvfb else None)
        proc = self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=die_with(os.getpid()))
        lines = queue.Queue()

        def pump():
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        # the driver names an image by its output folder (a file's series share its path); by its path
        # in the older protocol
        by_path = {os.path.join(self.m.input_dir, img): img for img in images}
        by_path.update({image_output_dir(self.work, img): img for img in images})
        owner_of = {}           # image -> the runner of its chunk, for images of chunks handed on (chaining)
        last = images[-1] if images else None   # the last image of the lines the driver has
        step = 1
        finished = {}           # this chunk's images
        finished_all = {}       # and those of the chunks handed on
        current = None          # image being processed
        t_begin = 0.0
        errors = []             # error lines seen since BEGIN
        printed = []            # the macro's other lines since BEGIN (its log.txt)
        last_activity = time.time()
        last_error_at = None
        ticks = cpu_ticks(proc.pid) or 0
        tick_hz = os.sysconf("SC_CLK_TCK")
        last_sample = time.time()
        tail = []              # last lines, to say why a JVM that never began an image stopped
        eof = False
        kill_reason = None
        while not eof:
            try:
                line = lines.get(timeout=0.25)
            except queue.Empty:
                line = ""
            now = time.time()
            if line is None:
                eof = True
            elif line:
                last_activity = now
                self.log.write(line + "\n")
                tail = (tail + [line.strip()])[-5:]
                parts = line.split("\t")
                tag = parts[0]
                if tag == "SCIOPS_VERSION" and len(parts) > 1:
                    self.version = parts[1]
                elif tag == "SCIOPS_BEGIN" and len(parts) > 1:
                    current = by_path.get(parts[1], parts[1])
                    t_begin, errors, last_error_at, printed = now, [], None, []
                    owner_of.get(current, self).begin(current)
                    if current == last and chaining:
                        handed = self.extend(jobfile, step)
                        step += 1
                        if handed:
                            child, more = handed
                            last = more[-1]
                            for img in more:
                                owner_of[img] = child
                                by_path[os.path.join(self.m.input_dir, img)] = img
                                by_path[image_output_dir(self.work, img)] = img
                elif tag == "SCIOPS_END" and current is not None:
                    # the JVM's own clock for the macro's time: its lines reach us in bursts (ImageJ's
                    # output is buffered), so the time between their arrivals missed up to a third of it
                    seconds = int(parts[2]) / 1000.0 if len(parts) > 2 and parts[2].isdigit() else now - t_begin
                    owner = owner_of.get(current, self)
                    finished_all[current] = owner.judge(current, seconds, errors, printed)
                    if owner is self:
                        finished[current] = finished_all[current]
                    current = None
                elif current is not None and ERROR_RE.search(line):
                    errors.append(line.strip())
                    last_error_at = now
                elif current is not None and len(printed) < LOG_LINES_MAX:
                    printed.append(line)
            if eof:
                break
            # CPU sample once a second: a JVM busy computing is not stalled.
            if now - last_sample >= 1.0:
                t = cpu_ticks(proc.pid)
                if t is not None:
                    if (t - ticks) / tick_hz > IDLE_CPU_SHARE * (now - last_sample):
                        last_activity = now
                    ticks = t
                last_sample = now
            if current is not None and now - t_begin > self.timeout:
                kill_reason = ("timeout", "no result after %.0f s (image_timeout_s)" % self.timeout)
            elif current is not None and last_error_at and now - last_activity > ERROR_GRACE_S:
                kill_reason = ("failed", errors[0])
            elif now - last_activity > self.stall:
                kill_reason = ("failed", "ImageJ stalled: no output and an idle CPU for %.0f s "
                               "(a macro error opens a modal dialog in ImageJ 1)" % self.stall)
            if kill_reason:
                self.note("killing JVM: %s", kill_reason[1])
                self.kill(proc)
                break
        self.log.flush()
        rc = proc.wait()
        maker.join()
        try:
            return self.jvm_ended(rc, current, t_begin, kill_reason, errors, tail, finished,
                                  owner_of.get(current, self))
        finally:
            self.end_children()

    def jvm_ended(self, rc, current, t_begin, kill_reason, errors, tail, finished, owner):
        """What run_jvm returns once its JVM ended: the image in flight (of ``owner``'s chunk) recorded."""
        if current is not None and rc != 0 and not kill_reason:
            time.sleep(STOP_GRACE_S)   # a stop of the whole task raises SystemExit here (see STOP_GRACE_S)
        if current is not None and rc in OUTSIDE_SIGNALS and not kill_reason:
            # Killed from outside (kill -9, the OOM killer, a node going down): not this
            # image's fault the first time. Stop here and let the scheduler resubmit the
            # chunk; a second kill under the same image marks it failed.
            how = OUTSIDE_SIGNALS[rc]
            if not owner.earlier_deaths().get(current):
                self.note("JVM killed (%s) from outside while processing %s: stopping", how, current)
                self.error = "JVM killed (%s) from outside while processing %s" % (how, current)
                self.interrupted = True
                return finished
            kill_reason = ("failed", "JVM killed (%s) twice while processing this image (out of memory?)" % how)
        if current is not None:
            if kill_reason:
                status, error = kill_reason
            else:
                status = "failed"
                error = errors[0] if errors else "ImageJ exited (code %s) while processing this image" % rc
            rec = owner.record(current, status, time.time() - t_begin, error)
            if owner is self:
                finished[current] = rec
        elif kill_reason and not finished:
            # Stalled before the first image began: a broken macro or launcher.
            self.error = "JVM stalled before starting any image; last output: %s" % " | ".join(tail)
            self.note("%s", self.error)
            return None
        if not finished and rc is not None and not kill_reason:
            self.error = "JVM exited with code %s before finishing any image; last output: %s" % (rc, " | ".join(tail))
            self.note("%s", self.error)
            return None
        return finished

    def judge(self, image, seconds, errors, printed=()):
        try:
            keep_log(image_output_dir(self.work, image), list(printed))
        except OSError as exc:
            self.note("%s: could not keep what the macro printed: %s", image, exc)
        missing = outputs_missing(image_output_dir(self.work, image), self.expected)
        if errors:
            return self.record(image, "failed", seconds, errors[0])
        if missing:
            return self.record(image, "failed", seconds, "expected output(s) not written: %s" % ", ".join(missing))
        try:
            rows, tables = self.save_tables(image)
        except OSError as exc:
            return self.record(image, "failed", seconds, "could not append its tables to the chunk's: %s" % exc)
        return self.record(image, "ok", seconds, rows=rows, tables=tables)

    @staticmethod
    def kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--task", type=int)
    ap.add_argument("--attempt", type=int, default=int(os.environ.get("SCIOPS_ATTEMPT", "1")))
    ap.add_argument("--images", action="append", help="process this image instead of a chunk (smoke run; repeat "
                                                      "it, as --images=NAME so a name may start with '-')")
    ap.add_argument("--status-file")
    args = ap.parse_args(argv)
    manifest = Manifest.load(args.manifest)
    task_id = args.task or task_id_from_env() or 1
    os.makedirs(logs_dir(manifest.run_dir), exist_ok=True)
    log_path = task_log_path(manifest.run_dir, task_id, args.attempt)
    if args.images is not None:
        log_path = smoke_log_path(manifest.run_dir)
    started = time.time()
    summary_path = None
    if args.images is None:
        summary_path = attempt_summary_path(manifest.work_dir, task_id, args.attempt)
    summary = {"task": task_id, "attempt": args.attempt, "host": socket.gethostname(), "start": started,
               "end": None, "exit": None, "imagej_version": None, "jvm_starts": 0, "images": None,
               "log": os.path.relpath(log_path, manifest.run_dir), "error": ""}
    if summary_path:
        write_json(summary_path, summary)   # a task killed outright still leaves its start (cost)
    stopped = []

    def stop(signum, frame):
        # scancel, qdel (SIGUSR2 first under -notify), a wall-time limit: unwind through run()'s
        # cleanup (JVM, Xvfb, scratch), then write the summary
        stopped.append(signum)
        raise SystemExit(128 + signum)

    handled = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
    previous = {s: signal.signal(s, stop) for s in handled}
    # -notify also sends SIGUSR1 before a suspend: its default action would end the task
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    runner = None
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            runner = ChunkRunner(manifest, task_id, args.attempt, log, images=args.images,
                                 status_file=args.status_file,
                                 chain=chain_from_env(task_id) if args.images is None else None)
            rc = runner.run()
    except SystemExit as exc:
        if not stopped:
            raise
        rc = exc.code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    error = runner.error if runner else ""
    if stopped:
        error = "stopped by signal %d (%s)" % (stopped[0], signal.Signals(stopped[0]).name) + \
            (": qdel" if stopped[0] == signal.SIGUSR2 else "")
    summary.update(end=time.time(), exit=rc, error=error)
    if runner is not None:
        summary.update(imagej_version=runner.version, jvm_starts=runner.jvm_starts, images=len(runner.images),
                       chained=runner.chained,
                       bioformats_version=bioformats_version(runner.m.launcher or {}))
    if summary_path:
        write_json(summary_path, summary)
    else:
        print(json.dumps(summary))
    return rc


if __name__ == "__main__":
    sys.exit(main())
