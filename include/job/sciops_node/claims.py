"""Claims: which runner runs a chunk's images now, for chaining.

A slot's runner goes on with the array's next chunks in its warm JVM (see ``JvmSession.extend`` in
``sciops_node.session``) instead of ending: a JVM start and its JIT's warm-up cost seconds. A chunk
is held through its claim file (``status/task-NNNN.claim``: the holder's pid and host); the chunk's
own task, started later by the scheduler, waits while another runner holds it and then finds its
images done. A claim whose holder is gone is taken over:

* on the holder's own machine (the local backend; a cluster's tasks on one node) at once, when its
  pid is gone (kill -9);
* from another node (Grid Engine: the claim files are on the shared filesystem) when the holder's
  heartbeat stops: a holder touches its claims every :data:`CLAIM_BEAT_S`, and a claim whose
  modification time has not moved for :data:`CLAIM_STALE_S` by the reader's own clock (never
  compared with the holder's or the file server's clock) is stale: a node lost under its runner.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

from .contract import claim_path

#: A claim file left empty this long (its maker died between creating and writing it) is stale.
CLAIM_EMPTY_STALE_S = 5.0
#: How often a runner whose chunk another runner is running looks whether it is done.
CLAIM_WAIT_S = 0.2
#: How often a holder touches the claims it holds (its heartbeat, for runners on other nodes).
CLAIM_BEAT_S = 5.0
#: A claim of another node's runner whose modification time has not moved this long (seen from here) is stale.
CLAIM_STALE_S = 60.0

_held = set()                # the claim files this process holds (its heartbeat touches them)
_held_lock = threading.Lock()
_beat = []                   # the heartbeat thread, once started
_seen = {}                   # another node's claim: path -> (its mtime, when this process first saw that mtime)


def _heartbeat():
    while True:
        time.sleep(CLAIM_BEAT_S)
        with _held_lock:
            paths = list(_held)
        for path in paths:
            try:
                os.utime(path)
            except OSError:   # released meanwhile
                pass


def _hold(path):
    with _held_lock:
        _held.add(path)
        if not _beat:
            _beat.append(threading.Thread(target=_heartbeat, name="claims-heartbeat", daemon=True))
            _beat[0].start()


def try_claim(work, task_id, by):
    """Hold chunk ``task_id`` (chaining): create its claim file, or take over one whose runner is gone.

    True when this process holds it now; False while another live runner does.
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
                os.unlink(path)   # its runner is gone (kill -9, a lost node): the chunk is free again
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "task": by}, fh)
        _hold(path)
        return True
    return False


def claim_live(path):
    """Is the runner named in a claim file alive? On this machine: its pid; on another node: its heartbeat."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    try:
        holder = json.loads(text)
    except ValueError:
        return time.time() - mtime < CLAIM_EMPTY_STALE_S   # being written now, or its maker died right after
    if holder.get("host") != socket.gethostname():
        return _beating(path, mtime)
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def _beating(path, mtime):
    """Another node's claim: live until its mtime has stood still for CLAIM_STALE_S of this process's time."""
    now = time.monotonic()
    seen = _seen.get(path)
    if seen is None or seen[0] != mtime:
        _seen[path] = (mtime, now)
        return True
    return now - seen[1] < CLAIM_STALE_S


def release_claim(work, task_id):
    """Remove this process's claim of ``task_id`` (not another's)."""
    path = claim_path(work, task_id)
    with _held_lock:
        _held.discard(path)
    try:
        with open(path, encoding="utf-8") as fh:
            holder = json.load(fh)
        if holder.get("pid") != os.getpid() or holder.get("host", socket.gethostname()) != socket.gethostname():
            return
        os.unlink(path)
    except (OSError, ValueError):
        pass
