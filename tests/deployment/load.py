"""Many runs at once on one deployment: what reaches the head node, measured from outside SciOps.

Used by ``tests/deployment/test_compose_stack.py`` (a few runs, in CI) and ``bench/bench_load.py``
(twenty). Two outside witnesses, not SciOps' own counters:

* ``ss -tnp`` sampled every 0.2 s: each SSH connection to the testbed's sshd with the process
  holding it, mapped to the Airflow service by process group (``Stack`` starts each service
  in a session of its own; the triggerer's trigger runner is its child);
* the testbed sshd's log (``LogLevel VERBOSE``): ``Accepted publickey ... port P`` per
  connection and ``Starting session: command ... port P`` per command, each matched to a
  service through the client port ``P``.

The triggerer's log says when its event loop was blocked ("Triggerer's async thread was blocked").
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD_LOG = Path("/var/lib/sciops-testbed/ssh/sshd.log")
SSHD_PORT = 2222
_SS = re.compile(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:%d\s+users:\(\(\"[^\"]*\",pid=(\d+)" % SSHD_PORT)
_ACCEPTED = re.compile(r"Accepted publickey for \S+ from 127\.0\.0\.1 port (\d+)")
_SESSION = re.compile(r"Starting session: command for \S+ from 127\.0\.0\.1 port (\d+)")
BLOCKED = "Triggerer's async thread was blocked"


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class HeadNodeTraffic:
    """Samples connections to the testbed sshd while it runs (``with HeadNodeTraffic(groups) as t:``).

    Connections already open when it starts are not counted.

    :param groups: service name → process group id (``Stack.procs[name].pid``).
    """

    groups: dict[str, int]
    port_owner: dict[int, str] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def __enter__(self) -> "HeadNodeTraffic":
        self.log_from = SSHD_LOG.stat().st_size if SSHD_LOG.exists() else 0
        self.before = {int(port) for port, _ in _SS.findall(self._ss())}   # already open: not this window's
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ended = time.time()

    @staticmethod
    def _ss() -> str:
        return subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True).stdout

    def _service(self, pid: int) -> str:
        pgid = _pgid(pid)
        return next((name for name, g in self.groups.items() if g == pgid), "other")

    def _sample(self) -> None:
        while not self._stop.is_set():
            now: dict[str, int] = {}
            for port, pid in _SS.findall(self._ss()):
                if int(port) in self.before:
                    continue
                name = self.port_owner.setdefault(int(port), self._service(int(pid)))
                now[name] = now.get(name, 0) + 1
            for name, n in now.items():
                self.peak[name] = max(self.peak.get(name, 0), n)
            self._stop.wait(0.2)

    def summary(self) -> dict[str, object]:
        """Connections opened and commands sent per service, the peak of open connections, per minute."""
        text = SSHD_LOG.read_bytes()[self.log_from:].decode(errors="replace") if SSHD_LOG.exists() else ""
        connections: dict[str, int] = {}
        commands: dict[str, int] = {}
        for port in _ACCEPTED.findall(text):
            name = self.port_owner.get(int(port), "unseen")
            connections[name] = connections.get(name, 0) + 1
        for port in _SESSION.findall(text):
            name = self.port_owner.get(int(port), "unseen")
            commands[name] = commands.get(name, 0) + 1
        minutes = max(self.ended - self.started, 1e-9) / 60
        return {"seconds": round(self.ended - self.started, 1), "connections": connections, "commands": commands,
                "peak_open_connections": dict(self.peak),
                "commands_per_minute": {k: round(v / minutes, 1) for k, v in commands.items()}}


def blocked_lines(triggerer_log: Path, offset: int) -> list[str]:
    """The triggerer's "event loop blocked" warnings written after ``offset``."""
    text = triggerer_log.read_bytes()[offset:].decode(errors="replace") if triggerer_log.exists() else ""
    return [line for line in text.splitlines() if BLOCKED in line]


def service_log(stack, name: str) -> Path:
    return stack.home / "service-logs" / f"{name}.log"


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def groups(stack) -> dict[str, int]:
    return {name: proc.pid for name, proc in stack.procs.items()}

