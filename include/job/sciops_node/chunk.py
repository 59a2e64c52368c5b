"""The chunk runner: one array task's images through ImageJ until each has a final status.

:class:`ChunkRunner` keeps a chunk's books: which images earlier attempts finished (their status
lines), which to blame for deaths, the status line and chunk-table rows of each image as it ends,
``count.json``. It runs the images that remain through JVMs (:class:`~sciops_node.session.JvmSession`,
its base class), a new JVM after one that stalled, timed out or crashed, until none remains.
See ``sciops_task.py``'s docstring for the whole story.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time

from . import qc, sandbox
from .claims import CLAIM_WAIT_S, release_claim, try_claim
from .contract import (
    BEGIN,
    EXIT_IMAGEJ_BROKEN,
    EXIT_INTERRUPTED,
    RESULT_KEYS,
    SUMMARY_KEYS,
    ChunkTable,
    Manifest,
    append_status,
    count_path,
    deaths_under,
    image_output_dir,
    read_statuses,
    status_path,
    tables_cut_short,
    unit_parts,
    write_json,
)
from .hygiene import SCRATCH_PREFIX, lost_attempts, remove_stale_scratch
from .jvm import Xvfb, dialog_agent, ij_jar_of, series_reader
from .protocol import reason as input_reason
from .session import JvmSession
from .units import TableError, image_tables, keep_log, outputs_missing

#: count.json is rewritten at most this often (and when the task ends).
COUNTS_EVERY_S = 1.0
#: JVM start failures in a row before the task gives up (exit code 3).
MAX_START_FAILURES = 2
#: An image in flight when its task died this many times (lost nodes not counted) is marked failed.
DEATHS_TO_BLAME = 2


class ChunkRunner(JvmSession):
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
        self.agent = None          # the dialog watcher's jar (sciops_node.jvm.dialog_agent), when ImageJ 1 runs
        self.series_jars = None    # SciopsSeries and Bio-Formats (sciops_node.jvm.series_reader), for Bio-Formats units
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

    def save_tables(self, image, results, summary):
        """Append the image's results and first summary row (each ``(header, rows)``) to the attempt's chunk tables."""
        header, rows = results
        tables = {}
        if rows:
            header = list(RESULT_KEYS) + ["macro_" + c if c in RESULT_KEYS else c for c in header]
            key = [image, str(self.task_id), str(self.attempt)]
            tables["results"] = self.tables["results"].append(header, [key + r for r in rows])
        s_header, s_rows = summary
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

    def inputs_swept(self, guard, images, owner_of, finished):
        """After a JVM: an image whose input changed since the JVM began (a later image's macro rewrote or
        deleted it) is failed, whatever its status was: its result no longer matches input/, and the run says so."""
        changed = guard.sweep()
        if not changed:
            return
        for img in images:
            said = changed.get(os.path.join(self.m.input_dir, unit_parts(img)[0]))
            if said:
                owner = owner_of.get(img, self)
                rec = owner.record(img, "failed", 0.0, input_reason([said]))
                if owner is self and finished is not None:
                    finished[img] = rec

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
                why = sandbox.unusable(self.m.launcher["sandbox"]) if self.m.launcher.get("sandbox") else None
                if why:   # never an unconfined JVM in its place
                    self.error = why
                    self.note("%s", why)
                    return EXIT_IMAGEJ_BROKEN
                if self.m.launcher.get("kind", "imagej1") == "imagej1":
                    xvfb = Xvfb(self.m.launcher.get("xvfb", "Xvfb")).start()   # starts while run_jvm prepares
                    t0 = time.time()
                    self.agent, why = dialog_agent(self.m.launcher.get("java", "java"),
                                                   ij_jar=ij_jar_of(self.m.launcher))
                    if why:
                        self.note("no dialog watcher (%s): a dialog ImageJ shows is named from its X server "
                                  "(xwininfo), without its text", why)
                    elif time.time() - t0 > 0.1:
                        self.note("dialog watcher built in %.1f s: %s", time.time() - t0, self.agent)
                    if self.m.bioformats_memo:   # files read through Bio-Formats: their metadata once a JVM
                        t0 = time.time()
                        self.series_jars, why = series_reader(self.m.launcher)
                        if why:
                            self.note("series opened with the Bio-Formats Importer (%s)", why)
                        elif time.time() - t0 > 0.1:
                            self.note("series reader built in %.1f s: %s", time.time() - t0, self.series_jars[0])
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

    def judge(self, image, seconds, errors, printed=(), drawn=None):
        """The final status of an image whose END line came: ``ok`` only when nothing went wrong and its
        outputs are whole (``sciops_node.units``: expected files present, tables read strictly, a required
        table with no rows only under a summary count of 0). ``drawn``: its QC overlay's ``qc`` (what the
        driver drew) and ``qc_seconds``, kept in an ``ok`` status line; a failed image keeps no overlay."""
        outdir = image_output_dir(self.work, image)
        rec = self._judge(image, outdir, seconds, errors, printed, drawn or {})
        if rec["status"] != "ok":
            qc.remove(outdir)
        return rec

    def _judge(self, image, outdir, seconds, errors, printed, drawn):
        try:
            keep_log(outdir, list(printed))
        except OSError as exc:
            self.note("%s: could not keep what the macro printed: %s", image, exc)
        missing = outputs_missing(outdir, self.expected)
        if errors:
            return self.record(image, "failed", seconds, self.failure_reason(errors))
        if missing:
            return self.record(image, "failed", seconds, "expected output(s) not written: %s" % ", ".join(missing))
        try:
            results, summary = image_tables(outdir, self.expected)
        except TableError as exc:
            return self.record(image, "failed", seconds, str(exc))
        except OSError as exc:
            return self.record(image, "failed", seconds, "could not read its tables: %s" % exc)
        try:
            rows, tables = self.save_tables(image, results, summary)
        except OSError as exc:
            return self.record(image, "failed", seconds, "could not append its tables to the chunk's: %s" % exc)
        return self.record(image, "ok", seconds, rows=rows, tables=tables, **drawn)
