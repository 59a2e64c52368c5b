"""One unit of work (an image, or a series of a file read through Bio-Formats) as the runner sees it.

What its macro gets from ``getArgument()`` (:func:`argument_for`), what it must leave in its output
folder to count as done (:func:`outputs_missing`), the CSV tables it wrote (:func:`read_csv_rows`)
and what it printed (:func:`keep_log`). No process is started here.
"""
from __future__ import annotations

import csv
import fnmatch
import os
import re


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


def outputs_missing(outdir, expected):
    """Names from ``expected`` (file names or glob patterns) with no file in outdir."""
    try:
        present = os.listdir(outdir)
    except FileNotFoundError:
        present = []
    return [pat for pat in expected if not fnmatch.filter(present, pat)]
