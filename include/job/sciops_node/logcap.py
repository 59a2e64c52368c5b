"""A task's log with a size bound: a macro printing in a loop cannot fill the disk through it.

Everything the JVM prints goes to the task log (``logs/task-NNNN.attempt-K.log``); a macro that
prints in a loop wrote 121 MB of it in 30 s. :class:`CappedLog` wraps the open log file: past
:data:`TASK_LOG_MAX` bytes the JVM's lines are dropped, after one line saying so, while the
runner's own notes (``[sciops ...]``: which image failed, why the JVM was restarted) still get
:data:`NOTES_MAX` bytes more. The images' own ``log.txt`` files keep their first lines either way
(``session.LOG_LINES_MAX``). Standard library only, as all of ``sciops_node``.
"""
from __future__ import annotations

#: Bytes of a task log before the JVM's output is dropped.
TASK_LOG_MAX = 16 * 1024 * 1024
#: Bytes of the runner's own notes accepted past the cap.
NOTES_MAX = 1024 * 1024
NOTE_PREFIX = "[sciops "


class CappedLog:
    """A text file opened for appending, written through with a bound (``write``, ``flush``, ``tell``)."""

    def __init__(self, fh, limit=None, notes=None):
        self.fh = fh
        self.limit = TASK_LOG_MAX if limit is None else limit
        self.notes = NOTES_MAX if notes is None else notes
        try:
            self.size = fh.tell()   # an earlier attempt's runner may have written into it already
        except (OSError, ValueError):
            self.size = 0
        self.dropped = 0

    def write(self, text):
        data = len(text.encode("utf-8", "replace"))
        if self.size + data <= self.limit:
            self.size += data
            return self.fh.write(text)
        if text.startswith(NOTE_PREFIX) and self.size + data <= self.limit + self.notes:
            self.size += data
            return self.fh.write(text)
        if not self.dropped:
            marker = ("[sciops] the task log reached %d bytes: the JVM's further output is dropped (a macro "
                      "printing in a loop?); each image's log.txt keeps its first lines\n" % self.limit)
            self.size += len(marker)
            self.fh.write(marker)
            self.fh.flush()
        self.dropped += data
        return len(text)

    def flush(self):
        self.fh.flush()

    def tell(self):
        return self.size
