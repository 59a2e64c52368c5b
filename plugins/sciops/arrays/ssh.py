"""Run a command on a head node over SSH and get ``(returncode, stdout, stderr)`` back.

``SSHRunner`` (paramiko, through the SSH provider's hook) for tasks, ``AsyncCommandRunner``
(asyncssh) for triggers, shared by every trigger of a triggerer that watches the same head node
(``SharedCommandRunner``); both run the argv a scheduler built, each element passed through
``shlex.quote`` (:func:`sciops.arrays.commands.shell_join`). What needs no SSH (the result type, the
runner protocol, ``LocalRunner``) is in :mod:`sciops.arrays.commands`, so that the schedulers import
nothing of SSH or Airflow; it is re-exported here.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from sciops.arrays.commands import CommandResult, CommandRunner, LocalRunner, shell_join  # noqa: F401 - re-exported
from sciops.errors import CommandError, OutcomeUnknown

log = logging.getLogger(__name__)


class HeadNode:
    """Where a runner's commands go: an Airflow SSH connection, optionally another host and its one host key."""

    def __init__(self, ssh_conn_id: str | None, cmd_timeout: float, host: str | None = None,
                 host_key: str | None = None):
        self.ssh_conn_id = ssh_conn_id
        self.host = host
        self.host_key = host_key
        self.cmd_timeout = cmd_timeout


class SSHRunner(HeadNode):
    """Runs argv on a head node through the SSH provider's ``SSHHook`` (paramiko).

    The hook is made on first use, never at construction (STYLE 1), and its client is
    kept for the following commands; a broken connection is reopened once per call.
    Credentials stay in the Airflow connection: only the quoted command line is logged.

    :param ssh_conn_id: the Airflow SSH connection of the head node.
    :param cmd_timeout: seconds one command may take.
    :param host: overrides the connection's host (a cluster made for this run).
    :param host_key: the only host key accepted (``"ssh-ed25519 AAAA…"``), overriding the
        connection's: a cluster made for this run, whose key was read from its console output.
    """

    def __init__(self, ssh_conn_id: str, cmd_timeout: float = 300, host: str | None = None,
                 host_key: str | None = None):
        super().__init__(ssh_conn_id, cmd_timeout, host, host_key)
        self._hook = None
        self._client = None

    def _connect(self):
        from airflow.providers.ssh.hooks.ssh import SSHHook

        if self._hook is None:
            self._hook = SSHHook(ssh_conn_id=self.ssh_conn_id, cmd_timeout=self.cmd_timeout, remote_host=self.host or "")
            if self.host_key:
                # the hook checks the server against its host_key (paramiko rejects any other key)
                self._hook.host_key = paramiko_key(self.host_key)
                self._hook.no_host_key_check = self._hook.allow_host_key_change = False
        self._client = self._hook.get_conn()
        return self._client

    def run(self, argv: list[str], *, check: bool = True, timeout: float | None = None) -> CommandResult:
        command = shell_join(argv)
        log.info("ssh %s: %s", self.ssh_conn_id, command)
        for attempt in (1, 2):
            client = self._client or self._connect()
            try:
                code, out, err = _exec(client, command, timeout or self.cmd_timeout)
                break
            except _NotSent as exc:
                # The command never left (sshd restarted, network blip before the channel opened):
                # reconnect once and send it then.
                self.close()
                if attempt == 2:
                    raise CommandError(list(argv), 255, "", f"SSH to {self.ssh_conn_id} failed: {exc.__cause__}") \
                        from exc
                log.warning("SSH connection %s lost (%s); reconnecting", self.ssh_conn_id, exc.__cause__)
            except (OSError, EOFError) as exc:  # TimeoutError included
                # Sent, outcome unknown (a qsub may have been accepted): never sent again.
                self.close()
                raise OutcomeUnknown(list(argv), 255, "", f"SSH command on {self.ssh_conn_id} was sent but its "
                                                          f"outcome is unknown ({type(exc).__name__}: {exc}); not "
                                                          "sent again") from exc
        result = CommandResult(list(argv), code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and code != 0:
            raise CommandError(list(argv), code, result.stdout, result.stderr)
        return result

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken client has nothing to recover
                pass
        self._client = None


def paramiko_key(line: str):
    """``"ssh-ed25519 AAAA…"`` → the paramiko key object."""
    import base64

    import paramiko

    kind, data = line.split()[:2]
    classes = {"ssh-ed25519": paramiko.Ed25519Key, "ssh-rsa": paramiko.RSAKey, "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
               "ecdsa-sha2-nistp384": paramiko.ECDSAKey, "ecdsa-sha2-nistp521": paramiko.ECDSAKey}
    if kind not in classes:
        raise ValueError(f"host key type {kind!r} is not one SciOps pins ({', '.join(classes)})")
    return classes[kind](data=base64.b64decode(data))


class _NotSent(Exception):
    """The SSH channel could not be opened: the command never reached the host (safe to send again)."""


def _exec(client, command: str, timeout: float) -> tuple[int, bytes, bytes]:
    """Run one command on a paramiko client; both streams drained together (no window deadlock).

    Not the hook's ``exec_ssh_client_command``: that logs every output line at INFO, and a
    ``qacct`` of a large array is thousands of lines per poll.
    """
    try:
        chan = client.get_transport().open_session(timeout=timeout)
        chan.settimeout(timeout)
    except (OSError, EOFError, AttributeError) as exc:  # AttributeError: no transport (closed client)
        raise _NotSent(str(exc)) from exc
    chan.exec_command(command)
    chan.shutdown_write()
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        elif time.monotonic() > deadline:
            chan.close()
            raise TimeoutError(f"command did not finish in {timeout:.0f} s: {command[:200]}")
        else:
            time.sleep(0.01)
    code = chan.recv_exit_status()
    chan.close()
    return code, bytes(out), bytes(err)


class AsyncCommandRunner(HeadNode):
    """The trigger's runner: the same argv, awaited. One SSH connection held across polls.

    :param ssh_conn_id: run on this head node over asyncssh; None runs locally.
    :param host: overrides the connection's host.
    :param host_key: the only host key accepted (see :class:`SSHRunner`).
    """

    def __init__(self, ssh_conn_id: str | None = None, cmd_timeout: float = 120, host: str | None = None,
                 host_key: str | None = None):
        super().__init__(ssh_conn_id, cmd_timeout, host, host_key)
        self._conn = None

    async def run(self, argv: list[str]) -> CommandResult:
        import asyncio

        if self.ssh_conn_id is None:
            proc = await asyncio.create_subprocess_exec(*map(str, argv), stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), self.cmd_timeout)
            return CommandResult(list(argv), proc.returncode or 0, out.decode("utf-8", "replace"),
                                 err.decode("utf-8", "replace"))
        if self._conn is None:
            await self.connect()
        result = await self._conn.run(shell_join(argv), check=False, timeout=self.cmd_timeout)
        out, err = result.stdout or "", result.stderr or ""
        # no exit status: the session was cut (sshd restarted, a signal): a failure, never a success
        code = 255 if result.exit_status is None else result.exit_status
        return CommandResult(list(argv), code,
                             out.decode("utf-8", "replace") if isinstance(out, bytes) else out,
                             err.decode("utf-8", "replace") if isinstance(err, bytes) else err)

    async def connect(self) -> None:
        import asyncio
        import importlib

        # the SSH provider's import takes ~0.15 s (paramiko): in a thread, not in the event loop
        ssh = await asyncio.to_thread(importlib.import_module, "airflow.providers.ssh.hooks.ssh")
        SSHHookAsync = ssh.SSHHookAsync  # noqa: N806 - a class
        hook = SSHHookAsync(ssh_conn_id=self.ssh_conn_id, host=self.host)
        if self.host_key:   # known_hosts as bytes is its content for asyncssh, not a file name
            hook.known_hosts = f"{self.host} {' '.join(self.host_key.split()[:2])}".encode()
        self._conn = await hook.get_conn()

    async def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
                await self._conn.wait_closed()
            except Exception:  # noqa: BLE001 - teardown is best effort
                pass
        self._conn = None


def async_connection_errors() -> tuple[type[BaseException], ...]:
    """What a lost connection raises in :class:`AsyncCommandRunner` (imports asyncssh: ~0.35 s, call it in a thread
    from an event loop)."""
    import asyncio

    import asyncssh

    # asyncssh.Error: handshake/protocol/disconnect (e.g. sshd restarted or MaxStartups);
    # OSError: refused TCP; TimeoutError: a wedged command or connection.
    return (OSError, asyncssh.Error, TimeoutError, asyncio.TimeoutError)


#: Commands in flight at once on one shared connection (sshd's MaxSessions defaults to 10).
MAX_CHANNELS = 8


class _SharedConnection:
    """One head node's connection in this event loop, its users, and the answers they share."""

    def __init__(self, ssh_conn_id: str | None, host: str | None, host_key: str | None, cmd_timeout: float):
        import asyncio

        self.runner = AsyncCommandRunner(ssh_conn_id, cmd_timeout=cmd_timeout, host=host, host_key=host_key)
        self.users = 0
        self.answers: dict[tuple[str, ...], tuple[float, Any]] = {}   # argv → (asked at, future)
        self.channels = asyncio.Semaphore(MAX_CHANNELS)
        self.opening = asyncio.Lock()
        self.commands = 0     # sent to the host
        self.shared = 0       # answered from another watcher's command

    async def run(self, argv: list[str], connection_errors: tuple) -> CommandResult:
        async with self.channels:
            if self.runner.ssh_conn_id is not None and self.runner._conn is None:
                async with self.opening:   # twenty triggers starting together open one connection, not twenty
                    if self.runner._conn is None:
                        try:
                            await self.runner.connect()
                        except connection_errors:
                            await self.runner.close()
                            raise
            self.commands += 1
            try:
                return await self.runner.run(argv)
            except connection_errors:
                await self.runner.close()   # every user reconnects through the next command
                raise


_SHARED: dict[Any, dict[tuple, _SharedConnection]] = {}


class SharedCommandRunner:
    """A trigger's runner on a connection shared by every trigger of this triggerer that talks to the same
    head node (same Airflow connection, host and pinned key), with identical status queries shared.

    Twenty runs watched at once hold one SSH connection to the head node, not twenty (sshd's
    ``MaxStartups`` refuses the eleventh concurrent handshake by default), and a status command
    that answers for every job (``qstat -xml -u '*'``, ``squeue --me``) is sent once per
    ``share_for`` seconds for all of them, not once per run. Per event loop (the triggerer has one).

    Not a library's: asyncssh multiplexes sessions on a connection but shares nothing between
    callers, and the SSH provider's async hook opens a connection per call.
    """

    def __init__(self, ssh_conn_id: str | None = None, cmd_timeout: float = 120, host: str | None = None,
                 host_key: str | None = None):
        import asyncio

        loop = asyncio.get_running_loop()
        for dead in [lp for lp in _SHARED if lp.is_closed()]:
            del _SHARED[dead]
        key = (ssh_conn_id, host, host_key)
        pool = _SHARED.setdefault(loop, {})
        if key not in pool:
            pool[key] = _SharedConnection(ssh_conn_id, host, host_key, cmd_timeout)
        self._shared = pool[key]
        self._shared.users += 1
        self._closed = False
        self._errors = async_connection_errors() if ssh_conn_id else (OSError, TimeoutError)

    @property
    def stats(self) -> dict[str, int]:
        return {"users": self._shared.users, "commands": self._shared.commands, "shared": self._shared.shared}

    async def run(self, argv: list[str], share_for: float = 0.0) -> CommandResult:
        """Run ``argv``; with ``share_for``, an answer to the same argv asked less than that many seconds ago
        (or still on its way) is returned instead of asking again."""
        import asyncio

        sh = self._shared
        if share_for <= 0:
            return await sh.run(argv, self._errors)
        key = tuple(map(str, argv))
        loop = asyncio.get_running_loop()
        now = loop.time()
        hit = sh.answers.get(key)
        if hit is not None and (not hit[1].done() or now - hit[0] < share_for):
            sh.shared += 1
        else:
            # a task of its own, not the asker's: a watcher cancelled while the command runs cancels nobody's answer
            command = loop.create_task(sh.run(argv, self._errors))

            def settled(task, key=key):
                if task.cancelled() or task.exception() is not None:   # (retrieved: no "never retrieved")
                    if sh.answers.get(key, (0.0, None))[1] is task:
                        del sh.answers[key]                                  # a failure is never shared later

            command.add_done_callback(settled)
            hit = sh.answers[key] = (now, command)
        return await asyncio.shield(hit[1])

    async def close(self) -> None:
        """This trigger is done with it; the last user closes the connection."""
        if self._closed:
            return
        self._closed = True
        sh = self._shared
        sh.users -= 1
        if sh.users <= 0:
            await sh.runner.close()
            for pool in _SHARED.values():
                for key, value in list(pool.items()):
                    if value is sh:
                        del pool[key]
