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
