#!/usr/bin/env python3
"""SciOps task runner: process one chunk of images in one ImageJ JVM.

Runs ON the compute node (or the Airflow worker for the ``local`` backend), so it
uses the Python 3 standard library only: compute nodes have no Airflow.

One array task = one chunk = one JVM that calls the user's macro once per image
(through ``driver.ijm``). The runner, not ImageJ's exit code, decides what
happened to each image:

* ``ok``       the driver printed the image's END line, the expected outputs exist and
               are whole (tables read strictly), and the log between BEGIN and END holds
               none of ImageJ's own error lines (``sciops_node.protocol.IMAGEJ_ERRORS``);
* ``failed``   an error line (an out-of-memory one says "out of memory"), a dialog ImageJ
               showed (ImageJ 1 pops a modal dialog on a macro error and waits for ever:
               the dialog watcher prints its text), missing or half-written outputs, or
               a stalled JVM (no output and an idle CPU for ``stall_seconds``);
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
    sciops_task.py --manifest ... --status-file S --images=a.tif --images=b.tif   # validate's smoke run

The task number comes from ``--task`` or the scheduler's environment
(``SCIOPS_TASK_ID``, ``SGE_TASK_ID``, ``SLURM_ARRAY_TASK_ID``).

This file is the entry script only; the runner is the package ``sciops_node`` beside it (both are
copied into each run's ``work/job/``, so ``python sciops_task.py`` finds the package by its own folder):

* ``sciops_node.contract``: what the node and the Airflow side share: file layout, status lines,
  the manifest (``Manifest``), the heap rule, exit codes (``sciops_node.tables``: the chunk tables);
* ``sciops_node.chunk``: ``ChunkRunner``, a chunk's books and its run loop;
* ``sciops_node.session``: driving one JVM through ``driver.ijm`` (stalls, timeouts, chaining);
* ``sciops_node.protocol``: the driver's lines (out of band: a secret per JVM), ImageJ's error lines, the
  inputs a macro must leave as they were; ``sciops_node.sandbox``: the bubblewrap sandbox of a worker's JVM;
* ``sciops_node.units``: one image's argument, expected outputs, tables and printed log;
* ``sciops_node.jvm``: Xvfb and the JVM's command line; ``sciops_node.claims``: chaining's claims;
* ``sciops_node.hygiene``: children that die with the runner, scratch cleanup, the macro's
  environment, the scheduler's environment.
"""
# ruff: noqa: E402 (the package is imported after the bytecode switch)
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time

if __name__ == "__main__":
    # started from a run's work/job/ (shared storage, synced with the run's folder): the package below is
    # imported without leaving a __pycache__ there (compiling it costs ~0.01 s a task)
    sys.dont_write_bytecode = True

from sciops_node.chunk import ChunkRunner
from sciops_node.contract import Manifest, attempt_summary_path, logs_dir, smoke_log_path, task_log_path, write_json
from sciops_node.hygiene import chain_from_env, task_id_from_env
from sciops_node.jvm import bioformats_version
from sciops_node.logcap import CappedLog

# isort: split
# Re-exports for the tests and benchmarks that still import sciops_task (the Airflow side imports
# sciops_node.contract itself); to drop when they import the sciops_node modules. Once the Airflow side used heap_mb,
# unit_parts, UNIT_RE, RESULT_KEYS, SUMMARY_KEYS, read_statuses, scan_statuses, status_path,
# image_output_dir, count_path, task_log_path, tables_dir and bioformats_version; tests and benchmarks
# also use main, ChunkRunner, append_status, _records, remove_stale_scratch, argument_for, Xvfb and the
# EXIT_* codes.
from sciops_node.contract import (  # noqa: F401
    BEGIN,
    EXIT_DELETED,
    EXIT_IMAGEJ_BROKEN,
    EXIT_INTERRUPTED,
    FINAL,
    RESULT_KEYS,
    SUMMARY_KEYS,
    UNIT_RE,
    _records,
    append_status,
    count_path,
    heap_mb,
    image_output_dir,
    read_statuses,
    scan_statuses,
    status_path,
    tables_dir,
    unit_parts,
)
from sciops_node.hygiene import remove_stale_scratch  # noqa: F401
from sciops_node.jvm import Xvfb  # noqa: F401
from sciops_node.units import argument_for  # noqa: F401


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
        with open(log_path, "a", encoding="utf-8") as fh:
            log = CappedLog(fh)   # bounded: a macro printing in a loop cannot fill the disk
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
