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
import json
import os
import queue
import re
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
from sciops_node.claims import CLAIM_WAIT_S, claim_live, release_claim, try_claim  # noqa: F401
from sciops_node.hygiene import (  # noqa: F401
    SCRATCH_PREFIX, chain_from_env, cpu_ticks, die_with, lost_attempts, macro_env, remove_stale_scratch,
    task_id_from_env,
)
from sciops_node.jvm import Xvfb, bioformats_version, launcher_argv  # noqa: F401
from sciops_node.units import argument_for, keep_log, outputs_missing, read_csv_rows  # noqa: F401

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

#: Lines a macro prints for one image that its log.txt keeps (a runaway print loop stays bounded).
LOG_LINES_MAX = 10_000


def make_folders(folders):
    """Make each folder (its parent exists); one made meanwhile by the driver is fine."""
    for folder in folders:
        try:
            os.mkdir(folder)
        except OSError:   # made by the driver; or it cannot be, and the driver's makeDirectory fails too
            pass


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
