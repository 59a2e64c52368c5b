"""Claims: which runner runs a chunk's images now, for chaining on the local backend.

On one machine a slot's runner goes on with the array's next chunks in its warm JVM (see
``JvmSession.extend`` in ``sciops_node.session``) instead of ending: a JVM start and its JIT's
warm-up cost seconds. A chunk is held through its claim file (``status/task-NNNN.claim``: the
holder's pid and host); the chunk's own task, started later by the scheduler, waits while another
runner holds it and then finds its images done. A claim whose holder is gone (kill -9) is taken over.
Chaining is the local backend's only: a claim's holder can be seen alive only on its own machine.
"""
from __future__ import annotations

import json
import os
import socket
import time

from .contract import claim_path

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
