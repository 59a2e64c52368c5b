"""Run a command and get ``(returncode, stdout, stderr)`` back.

Schedulers never run anything themselves (STYLE 5): they build argv lists and
parse output, and a runner from this module executes them. ``LocalRunner`` runs a
subprocess on this machine; the SSH runners (a later issue) run the same argv on a
head node, each element passed through ``shlex.quote``.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass
from typing import Protocol

from sciops.errors import CommandError

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
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        result = CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(list(argv), proc.returncode, proc.stdout, proc.stderr)
        return result
