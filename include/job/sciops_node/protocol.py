"""What the JVM's lines mean, and what the runner checks around each image: the driver's protocol, ImageJ's
error lines, the inputs a macro must leave as they were.

The driver's bookkeeping lines are out of band: each JVM gets a secret of its own (:func:`new_secret`, in the
first line of its job file, which ``driver.ijm`` reads and deletes before any user macro runs; a chain's
``<job>.more<N>`` files carry no secret and are deleted once read), and prefixes every line it prints for the
runner with ``SCIOPS_<secret>_`` (:class:`Lines`). A line without it is the macro's, whatever it says: a macro
that prints ``SCIOPS_BEGIN <folder>`` writes nothing there and restarts nothing. The task log keeps the driver's
lines without the secret (:meth:`Lines.loggable`): on a cluster a macro can read its task's log.

Everything else the JVM prints is the macro's, among it ImageJ's own error lines (:data:`IMAGEJ_ERRORS`).

A macro must not change ``input/`` (on clusters nothing stops it: :class:`InputGuard` records each input's size
and mtime before the JVM runs it and compares them as its image ends, and all of them when the JVM ends).
"""
from __future__ import annotations

import os
import re
import secrets

#: ImageJ's own words for "this image went wrong", even when ImageJ carries on: what ImageJ 1.53t prints in
#: -batch mode (it has no window to show them in: ``IJ.error``, ``IJ.outOfMemory``, ``IJ.handleException``) and
#: what the JVM prints. Each is matched at the start of the line, case for case, and a line is searched for
#: nothing else: a macro's own printed words ("fit residual error: 0.05", "Error: none found") never fail its
#: image. ``(kind, pattern)``: an ``out of memory`` line makes the image's reason say so, whatever came first.
IMAGEJ_ERRORS = (
    ("out of memory", re.compile(r"<Out of memory>")),                         # IJ.outOfMemory, 10 times over
    ("out of memory", re.compile(r'(?:Exception in thread "[^"]*" )?java\.lang\.OutOfMemoryError\b')),
    ("out of memory", re.compile(r"There is not enough free memory to allocate")),   # NewImage
    ("exception", re.compile(r'Exception in thread "')),                       # the JVM: an uncaught exception
    ("exception", re.compile(r"(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)(?::|$)")),   # a stack trace's head
    ("macro error", re.compile(r"Macro Error\b")),
    ("imagej", re.compile(                                                      # IJ.error, printed
        r"(?:File not found:|Format not supported or reader plugin not found:|Unsupported format or file not found:"
        r"|FileInfo parameter error|Error opening |Error saving results:|Image is too large\."
        r"|ImageJ cannot open |Unsupported BitsPerSample:|Cannot open JPEG-compressed TIFFs"
        r"|Unsupported save\(\) or saveAs\(\) file format:|Plugin or class not found:|Unrecognized command:"
        r"|Could not find JavaScript engine|This ZIP archive does not contain)")),
)


def imagej_error(line):
    """The kind of ImageJ's error ``line`` is (:data:`IMAGEJ_ERRORS`), or None: a line of the macro's own."""
    for kind, pattern in IMAGEJ_ERRORS:
        if pattern.match(line):
            return kind
    return None


def dialog_reason(parts):
    """An image's reason from the dialog watcher's line (its tab-separated ``parts``: tag, title, text)."""
    title = parts[1] if len(parts) > 1 else ""
    text = "\t".join(parts[2:]).strip()
    return "ImageJ showed a dialog \"%s\"%s" % (title, ": " + text if text else "")


# -- the driver's lines -----------------------------------------------------------------------------------
#: The driver's line kinds (``SCIOPS_<secret>_<KIND>``, tab-separated fields after it).
KINDS = ("VERSION", "BEGIN", "END", "DONE")


def new_secret():
    """A JVM's secret: 128 random bits, in hex (letters and digits only: a macro-language string as it is)."""
    return secrets.token_hex(16)


def job_header(secret, macro_path, macro_args):
    """The first lines of a JVM's job file (``driver.ijm`` reads them; see its head comment)."""
    return "secret=%s\nmacro=%s\nargs=%s\n" % (secret, macro_path,
                                              "\t".join("%s=%s" % kv for kv in sorted(macro_args.items())))


class Lines:
    """The driver's lines of one JVM, told from the macro's by the JVM's secret."""

    def __init__(self, secret):
        self.prefix = "SCIOPS_%s_" % secret

    def parse(self, line):
        """``(kind, parts)`` of a driver's line (``parts[0]`` is the kind), ``(None, None)`` for any other."""
        if not line.startswith(self.prefix):
            return None, None
        parts = line[len(self.prefix):].split("\t")
        return (parts[0], parts) if parts[0] in KINDS else (None, None)

    def loggable(self, line):
        """``line`` as the task log keeps it: a driver's line without the secret (``SCIOPS_BEGIN ...``)."""
        return "SCIOPS_" + line[len(self.prefix):] if line.startswith(self.prefix) else line


# -- inputs a macro must leave as they were ----------------------------------------------------------------
def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _said(before, after):
    if after is None:
        return "deleted"
    return "changed (size %d -> %d bytes, mtime %s)" % (before[0], after[0],
                                                        "changed" if after[1] != before[1] else "kept")


class InputGuard:
    """Size and mtime of each input of a JVM's images, taken before the JVM runs them (:meth:`add`).

    :meth:`check` as an image ends: its own input file; :meth:`sweep` when the JVM has ended: every input (a later
    image's macro rewrote or deleted an earlier image's file). Each change is reported once, against the image
    whose input it is: the JVM's lines reach the runner in bursts, so which macro did it cannot be known here.
    One stat an image as it ends, one more each when the JVM ends.
    """

    def __init__(self, input_dir):
        self.input_dir = input_dir
        self.files = {}      # path -> (size, mtime_ns), or None (absent before: nothing to compare)
        self.reported = set()

    def add(self, paths):
        for path in paths:
            if path not in self.files:
                self.files[path] = _stat(path)

    def check(self, path):
        """``["input/a.tif deleted"]`` when ``path`` changed since :meth:`add` (and was not reported), else []."""
        before = self.files.get(path)
        if before is None or path in self.reported:
            return []
        after = _stat(path)
        if after == before:
            return []
        self.reported.add(path)
        return ["input/%s %s" % (os.path.relpath(path, self.input_dir), _said(before, after))]

    def sweep(self):
        """Every input that changed and was not reported yet: ``{path: "input/a.tif deleted"}``."""
        out = {}
        for path in list(self.files):
            said = self.check(path)
            if said:
                out[path] = said[0]
        return out


def reason(changed):
    """A failed image's reason when its input changed (``changed``: :meth:`InputGuard.check`'s)."""
    return "its input was changed while the task ran (a macro may never change input/): %s" % "; ".join(changed)
