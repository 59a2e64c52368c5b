"""One unit of work (an image, or a series of a file read through Bio-Formats) as the runner sees it.

What its macro gets from ``getArgument()`` (:func:`argument_for`), what it must leave in its output
folder to count as done (:func:`outputs_missing`), the CSV tables it wrote, read strictly and checked
whole (:func:`read_csv_rows`, :func:`image_tables`), and what it printed (:func:`keep_log`). No process is
started here.

A table is whole when every row has exactly its header's fields and every quoted field is closed: a
half-written table (a row cut off, a field cut inside its quotes) is :class:`TableError`, never padded.
A required table (one that ``expected_outputs`` names) with no rows is accepted for ``results.csv`` only
when the image's summary says there was nothing to count (:func:`image_tables`); ``summary.csv`` must
have its row.
"""
from __future__ import annotations

import csv
import fnmatch
import os
import re


class TableError(ValueError):
    """A table an image left that is not whole or not enough: the reason, for its status line."""


#: A summary column that says how many objects the image has: the word "count" in its name, on its own or
#: joined by ``_`` or a space: ``count``, ImageJ's Summary ``Count``, ``nuclei_count``, ``count_dapi``, ``Cell Count``.
COUNT_COLUMN = re.compile(r"(?:^|[\s_])count(?:$|[\s_])", re.IGNORECASE)


def read_csv_rows(path):
    """(header, rows) of a CSV the macro wrote, read strictly; ImageJ's unnamed row-number column dropped.

    ``([], [])`` for a missing or empty file; blank lines skipped. :class:`TableError` for a row with more or
    fewer fields than the header (cut off, or not of this table) and for a quoted field that is never closed
    (the file ends inside it): a short row is never padded.
    """
    name = os.path.basename(path)
    lines = []
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, strict=True)
            try:
                for r in reader:
                    if r:
                        lines.append((reader.line_num, r))
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    raise TableError("%s ends inside a quoted field, at line %d (cut off?)"
                                     % (name, reader.line_num)) from None
                raise TableError("%s is not well-formed CSV at line %d: %s" % (name, reader.line_num, exc)) from None
    except FileNotFoundError:
        return [], []
    if not lines:
        return [], []
    width = len(lines[0][1])
    for line_num, r in lines[1:]:
        if len(r) != width:
            raise TableError("%s line %d has %d field(s), its header %d (%s)" % (
                name, line_num, len(r), width, "cut off?" if len(r) < width else "not a row of this table"))
    keep = [i for i, c in enumerate(lines[0][1]) if c.strip() and not c.startswith("Unnamed:")]
    header = [lines[0][1][i] for i in keep]
    return header, [[r[i] for i in keep] for _, r in lines[1:]]


def summary_counts(table):
    """``{column: value}`` of the summary's count columns (:data:`COUNT_COLUMN`) in its first row."""
    header, rows = table
    if not rows:
        return {}
    return {c: rows[0][i] for i, c in enumerate(header) if COUNT_COLUMN.search(c.strip())}


def image_tables(outdir, expected):
    """The image's ``results.csv`` and ``summary.csv``, each ``(header, rows)``, read strictly and checked enough.

    :class:`TableError` when one is not whole (:func:`read_csv_rows`), or when one that ``expected`` names (a
    required table) has no rows: ``summary.csv`` must have its row; ``results.csv`` (a row per object) may be
    empty or a header alone only when the summary says there was nothing to count, every count column of its
    first row (:data:`COUNT_COLUMN`) being 0. (Errors and out-of-memory lines fail the image before this: a
    count of 0 is believed only from a run that printed none.)
    """
    def required(name):
        return any(fnmatch.fnmatch(name, pat) for pat in expected)

    paths = {name: os.path.join(outdir, name) for name in ("results.csv", "summary.csv")}
    results, summary = read_csv_rows(paths["results.csv"]), read_csv_rows(paths["summary.csv"])
    if required("summary.csv") and os.path.exists(paths["summary.csv"]) and not summary[1]:
        raise TableError("summary.csv has %s and no row" % ("a header" if summary[0] else "no header"))
    if required("results.csv") and os.path.exists(paths["results.csv"]) and not results[1]:
        counts = summary_counts(summary)
        said = ", ".join("%s %s" % kv for kv in counts.items())
        if not counts:
            raise TableError("results.csv has no rows, and no summary count of 0 says there was nothing to "
                             "measure (summary.csv: a column named count)")
        if not all(_is_zero(v) for v in counts.values()):
            raise TableError("results.csv has no rows, but the summary says %s" % said)
    return results, summary


def _is_zero(text):
    try:
        return float(text) == 0
    except ValueError:
        return False


#: ``{name}`` in a ``macro_argument`` template or a macro argument's value.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        # one pass: a value put in is never read for placeholders again (an image named "a{output}.tif"
        # stays that name); the image's own fields win over a macro argument of the same name
        values = dict(extra, **fields)
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)

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


def outputs_missing(outdir, expected):
    """Names from ``expected`` (file names or glob patterns) with no file in outdir."""
    try:
        present = os.listdir(outdir)
    except FileNotFoundError:
        present = []
    return [pat for pat in expected if not fnmatch.filter(present, pat)]
