"""Running a command: the result, the runner protocol, the one quoting function, the local runner.

Schedulers never run anything themselves (STYLE 5): they build argv lists and parse output,
and a runner executes them. This module holds what they need and nothing that pulls in
Airflow, paramiko or asyncssh; the SSH runners live in :mod:`sciops.arrays.ssh`.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass
from typing import Protocol

from sciops.errors import CommandError, OutcomeUnknown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def run(self, argv: list[str], *, check: bool = True, timeout: float | None = None) -> CommandResult: ...


def shell_join(argv: list[str]) -> str:
    """One shell command line with every element quoted: the only way argv reaches a shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class LocalRunner:
    """Runs argv as a subprocess on this machine (no shell involved)."""

    def run(self, argv: list[str], *, check: bool = True, timeout: float | None = None) -> CommandResult:
        log.debug("running %s", shell_join(argv))
        try:
            proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            # killed at the timeout, but it may have done its work first (a submit that was slow to answer)
            raise OutcomeUnknown(list(argv), 255, "", f"no answer in {timeout:.0f} s; killed, outcome unknown") \
                from exc
        result = CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(list(argv), proc.returncode, proc.stdout, proc.stderr)
        return result
