"""Where the ``sciops`` command's storage root is, and how it reaches it, without asking twice.

The root: ``--storage-root``, else ``SCIOPS_STORAGE_ROOT``, else the config file's ``storage_root``,
else Airflow's own, asked of the plugin's ``GET /sciops/api/storage`` with the command's login (the
scientist does not repeat what the server knows). That route also lists the roots a run may name
(``SCIOPS_ALLOWED_STORAGE_ROOTS``): ``sciops run`` on a root given here passes it as the run's
``storage_root`` when Airflow allows it, and refuses before triggering when it does not.

S3 credentials: ``--conn-id`` / ``SCIOPS_AWS_CONN_ID`` / ``conn_id`` name an Airflow AWS connection
(``AIRFLOW_CONN_<ID>`` on this machine); without one, the AWS SDK's own chain, as the AWS CLI finds it:
``--profile`` or ``profile``, ``AWS_PROFILE``, the environment's keys, ``~/.aws``, SSO, the instance role
(:mod:`sciops.storage.credentials`). An S3 root is checked once (one listing of nothing) before a command
uses it: a missing bucket, refused keys or a missing permission is one line with the fix; nothing is made.
"""
from __future__ import annotations

from typing import Any

from sciops.cli.api import Airflow, Unreachable
from sciops.cli.settings import EXIT_BAD_INPUT, Settings, Stop
from sciops.cli.terminal import shown

#: The plugin's route that says where runs keep projects (sciops.web.api.api_storage).
ROUTE = "/sciops/api/storage"
#: How a field of a storage error is named to someone at the command line.
FLAGS = {"aws_conn_id": "--conn-id", "profile": "--profile", "storage_root": "--storage-root"}
NOT_HERE = "no storage root here (--storage-root, SCIOPS_STORAGE_ROOT or the config file's storage_root)"


def server_storage(af: Airflow) -> dict[str, Any] | None:
    """Airflow's storage root and the others its runs may name; None from an api-server without the route."""
    try:
        got = af.call("GET", ROUTE)
    except Unreachable:
        raise
    except Stop as exc:
        if exc.code == EXIT_BAD_INPUT:   # 404: a SciOps plugin older than the route
            return None
        raise
    return got if isinstance(got, dict) and isinstance(got.get("storage_root"), str) else None


def same_root(a: str, b: str) -> bool:
    return a.removeprefix("file://").rstrip("/") == b.removeprefix("file://").rstrip("/")


def airflow_root(s: Settings) -> str:
    """Airflow's storage root, asked with the command's login; a Stop saying what to give instead."""
    try:
        info = server_storage(Airflow(s))
    except Stop as exc:
        raise Stop(f"{NOT_HERE}, and Airflow could not give its own: {exc}", exc.code) from None
    if info is None:
        raise Stop(f"{NOT_HERE}, and Airflow at {s.api_url} does not say its own (its SciOps predates {ROUTE}): "
                   "give --storage-root")
    return info["storage_root"]


def credentials(s: Settings):
    from sciops.storage.credentials import FromAwsChain, FromConnection

    return FromConnection(s.conn_id) if s.conn_id else FromAwsChain(s.profile)


def open_storage(s: Settings):
    """The storage root the command works on, reachable: a folder here, or an S3 prefix checked once."""
    from sciops.errors import ConfigError, StorageError
    from sciops.storage.root import get_storage

    root, learned = s.storage_root, False
    if not root:
        root, learned = airflow_root(s), True
    try:
        storage = get_storage(root, credentials=credentials(s))
    except StorageError as exc:
        raise Stop(f"{'Airflow' if learned else '--storage-root'}: {exc}") from None
    if storage.is_local:
        if learned and not storage.root.is_dir():
            raise Stop(f"Airflow's storage root is the folder {shown(root)} on its own machine, not here: mount it "
                       "here and give its path with --storage-root, or trigger the run with sync_from")
        return storage
    try:
        storage.check()
    except ConfigError as exc:
        whose = "Airflow's" if learned else "the"
        name = {**FLAGS, "storage_root": f"{whose} storage root {storage.url}"}
        raise Stop("; ".join(f"{name.get(f, f)}: {m}" for f, m in exc.problems)) from None
    return storage


def run_root(af: Airflow, s: Settings, conf: dict[str, Any]) -> None:
    """A root given here (not Airflow's own) goes to the run as its ``storage_root`` when Airflow allows it;
    one it does not allow is a Stop before anything is triggered. Nothing changes when the api-server does not
    say (an older plugin) or the run's ``-p storage_root`` says already."""
    if not s.storage_root or "storage_root" in conf:
        return
    info = server_storage(af)
    if info is None or same_root(s.storage_root, info["storage_root"]):
        return
    allowed = [r for r in info.get("allowed_storage_roots") or [] if isinstance(r, str)]
    if any(same_root(s.storage_root, r) for r in allowed):
        conf["storage_root"] = s.storage_root
        return
    others = f"; it also allows {', '.join(shown(r) for r in allowed)}" if allowed else ""
    raise Stop(f"storage root {shown(s.storage_root)} (--storage-root, SCIOPS_STORAGE_ROOT or the config file) is not "
               f"one Airflow at {s.api_url} lets runs use: its own is {shown(info['storage_root'])}{others}. Leave "
               "the storage root unset here to use Airflow's, or ask the admin to add it to "
               "SCIOPS_ALLOWED_STORAGE_ROOTS")
