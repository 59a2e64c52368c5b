"""sciops_node.claims: which runner runs a chunk now (chaining), and the chain from the environment."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from sciops_node import claims, contract, hygiene


def test_a_claim_is_held_while_its_runner_lives_and_taken_over_when_it_is_gone(tmp_path):
    work = str(tmp_path)
    assert claims.try_claim(work, 3, 1)                       # made: ours
    assert not claims.try_claim(work, 3, 2)                    # ours, alive: not again
    path = contract.claim_path(work, 3)
    dead = subprocess.Popen(["true"])
    dead.wait()
    Path(path).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "task": 1}))
    assert claims.try_claim(work, 3, 2)                       # its runner is gone: taken over
    Path(path).write_text("")                                  # being written by a runner right now
    assert not claims.try_claim(work, 3, 2)
    os.utime(path, (time.time() - 60, time.time() - 60))       # ... or its maker died right after making it
    assert claims.try_claim(work, 3, 2)
    Path(path).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "task": 1}))
    claims.release_claim(work, 3)                              # not ours: left alone
    assert Path(path).exists()
    Path(path).unlink()
    assert claims.try_claim(work, 3, 2)
    claims.release_claim(work, 3)
    assert not Path(path).exists()
    assert hygiene.chain_from_env(2, {"SCIOPS_CHAIN": "1,2,5,9"}) == [5, 9]
    assert hygiene.chain_from_env(9, {"SCIOPS_CHAIN": "1,2,5,9"}) == []
    assert hygiene.chain_from_env(2, {}) is None and hygiene.chain_from_env(3, {"SCIOPS_CHAIN": "1,2"}) is None
    assert hygiene.chain_from_env(2, {"SCIOPS_CHAIN": "1:2:5:9"}) == [5, 9]    # from Grid Engine (qsub -v: no commas)


def test_another_nodes_claim_is_live_while_its_heartbeat_moves_and_stale_when_it_stops(tmp_path, monkeypatch):
    """A claim on the shared filesystem by a runner on another node: its pid cannot be looked at from here, so its
    holder is alive while the file's mtime moves (the holder touches it every CLAIM_BEAT_S), stale once it has
    stood still for CLAIM_STALE_S of this process's own clock (the file's time itself is never compared)."""
    clock = [1000.0]
    monkeypatch.setattr(claims.time, "monotonic", lambda: clock[0])
    work = str(tmp_path)
    path = contract.claim_path(work, 4)
    os.makedirs(os.path.dirname(path))
    Path(path).write_text(json.dumps({"pid": 1, "host": "compute-other-node", "task": 2}))
    os.utime(path, (5.0, 5.0))                        # a clock far behind this one's: no matter
    assert not claims.try_claim(work, 4, 3)          # first seen: live
    clock[0] += claims.CLAIM_STALE_S - 1
    assert not claims.try_claim(work, 4, 3)          # still inside the window
    os.utime(path, (6.0, 6.0))                        # a beat
    clock[0] += 2
    assert not claims.try_claim(work, 4, 3)          # seen moving: the window starts again
    clock[0] += claims.CLAIM_STALE_S - 1
    assert not claims.try_claim(work, 4, 3)
    clock[0] += 2
    assert claims.try_claim(work, 4, 3)              # stood still for CLAIM_STALE_S: the node is gone, taken over
    assert json.loads(Path(path).read_text())["pid"] == os.getpid()
    claims.release_claim(work, 4)


def test_a_holder_touches_its_claims_and_stops_when_released(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_BEAT_S", 0.05)
    work = str(tmp_path)
    assert claims.try_claim(work, 5, 5)
    path = contract.claim_path(work, 5)
    os.utime(path, (1.0, 1.0))
    deadline = time.time() + 10
    while os.stat(path).st_mtime == 1.0 and time.time() < deadline:
        time.sleep(0.05)
    assert os.stat(path).st_mtime > 1.0                # touched by the heartbeat
    claims.release_claim(work, 5)
    assert not Path(path).exists() and path not in claims._held
