"""The chunk tables: each task attempt's measurement rows, appended image by image as images end.

``tables/task-NNNN.attempt-K.results.csv`` and ``...summary.csv`` (a new ``.partP`` file when an
image's columns differ from the file's header), prefixed with ``image``, ``task`` and ``attempt``.
An ``ok`` status line records, per table, the file and the byte range its rows fill; collation
(``sciops.reporting.collate``) reads those ranges. Part of the node/Airflow contract: ``sciops_node.contract``
re-exports everything here.
"""
from __future__ import annotations

import csv
import io
import os

__all__ = ["RESULT_KEYS", "SUMMARY_KEYS", "tables_dir", "chunk_table_name", "ChunkTable", "tables_cut_short"]

#: Columns the chunk tables put before the macro's own; a macro column of the same name is kept
#: as ``macro_<name>``.
RESULT_KEYS = ("image", "task", "attempt")
#: summary.csv's own columns (the runner's); the macro's summary columns of these names are dropped.
SUMMARY_KEYS = ("image", "task", "attempt", "seconds", "n_results")


def tables_dir(work):
    return os.path.join(work, "tables")


def chunk_table_name(task_id, attempt, kind, part=1):
    """A chunk table's file name in :func:`tables_dir`: ``task-NNNN.attempt-K.<kind>[.partP].csv``."""
    return "task-%04d.attempt-%d.%s%s.csv" % (task_id, attempt, kind, "" if part == 1 else ".part%d" % part)


class ChunkTable:
    """One attempt's rows of one kind (``results`` or ``summary``), appended image by image."""

    def __init__(self, work, task_id, attempt, kind):
        self.dir = tables_dir(work)
        self.task_id, self.attempt, self.kind = task_id, attempt, kind
        self.part = 0
        self.header = None
        self.name = None

    def _next_part(self, header):
        while True:
            self.part += 1
            name = chunk_table_name(self.task_id, self.attempt, self.kind, self.part)
            path = os.path.join(self.dir, name)
            if not os.path.exists(path) or os.path.getsize(path) == 0:
                self.name, self.header = name, header
                return

    def append(self, header, rows):
        """Append ``rows`` under ``header``; return ``[file name, first byte of them, byte after them]``."""
        os.makedirs(self.dir, exist_ok=True)
        header = [c.replace("\r", " ").replace("\n", " ") for c in header]   # the header is one line
        if header != self.header:
            self._next_part(header)
            self._write(self._csv([header]))
        data = self._csv(rows)
        end = self._write(data)
        return [self.name, end - len(data), end]

    @staticmethod
    def _csv(rows):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8")

    def _write(self, data):
        # not fsynced: the status line that points at these rows is, and a file found shorter than the
        # offset it records (a node lost before the rows reached the disk) is detected (tables_cut_short)
        fd = os.open(os.path.join(self.dir, self.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)


def tables_cut_short(work, rec):
    """The chunk tables an ``ok`` record points at that are shorter than the offset it recorded."""
    out = []
    for name, _, end in (rec.get("tables") or {}).values():
        try:
            size = os.path.getsize(os.path.join(tables_dir(work), name))
        except OSError:
            size = -1
        if size < end:
            out.append((name, end, size))
    return out
