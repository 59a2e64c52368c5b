"""The ``sciops`` command's settings and its one-line errors with their exit status.

Settings come from flags, else the environment (``SCIOPS_API_URL``, ``SCIOPS_USER``,
``SCIOPS_STORAGE_ROOT``, ``SCIOPS_AWS_CONN_ID``), else the config file (``SCIOPS_CONFIG``, by
default ``~/.config/sciops/config.toml``: ``api_url``, ``user``, ``storage_root``, ``conn_id``, ``profile``,
each text; never a password, under any name or section: such a file is refused, as is an unknown key), else
the defaults (``http://localhost:8080``, user ``airflow``; the storage root: Airflow's own, and S3 through
the AWS credential chain: :mod:`sciops.cli.storage`). An AWS profile (``--profile``, ``profile``) and an
Airflow connection (``--conn-id``, ``conn_id``) are two ways to S3: a flag wins over the other's setting,
and both given at one level is an error.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sciops.cli.terminal import shown
from sciops.settings import setting

#: Exit status: 0 done; 1 the run or a transfer failed; 2 bad input; 3 Airflow unreachable or the login refused.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_AIRFLOW = 1, 2, 3


class Stop(Exception):
    """One clear line for the user, and the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    api_url: str | None
    user: str | None
    storage_root: str | None
    conn_id: str | None
    #: an AWS profile (None: AWS_PROFILE or the default one); used only when conn_id is None
    profile: str | None = None
    #: plain http to a machine other than this one (the password in clear): only when asked for
    insecure_http: bool = False


#: The config file's keys, all text (flags and SCIOPS_* variables give the same).
KEYS = ("api_url", "user", "storage_root", "conn_id", "profile")
#: Key names that hold a secret, wherever they are in the file.
SECRET = re.compile(r"pass(word|wd)?|secret|token|credential", re.IGNORECASE)


def _secrets(data: dict, where: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if SECRET.search(str(key)):
            out.append(name)
        if isinstance(value, dict):
            out += _secrets(value, name)
    return out


def _file_settings() -> dict[str, str]:
    path = Path(setting("SCIOPS_CONFIG")).expanduser()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise Stop(f"{path} is not valid TOML ({shown(exc)}); fix or remove it") from None
    secrets = _secrets(data)
    if secrets:   # under any section or name: a password in a file is refused, never silently ignored
        raise Stop(f"{path} holds a password: remove it ({', '.join(shown(s) for s in secrets[:5])}; use "
                   "SCIOPS_PASSWORD, or type it when asked)")
    unknown = [shown(k) for k in data if k not in KEYS]
    if unknown:
        raise Stop(f"{path}: unknown setting(s) {', '.join(unknown[:5])}; the file takes {', '.join(KEYS)} "
                   "(top-level, no sections)")
    bad = [k for k in KEYS if k in data and not isinstance(data[k], str)]
    if bad:
        raise Stop(f"{path}: {bad[0]} must be text in quotes (got {type(data[bad[0]]).__name__} "
                   f"{shown(repr(data[bad[0]]))[:80]}); e.g. {bad[0]} = \"...\"")
    return dict(data)


def settings(api_url: str | None = None, user: str | None = None, storage_root: str | None = None,
             conn_id: str | None = None, insecure_http: bool = False, profile: str | None = None) -> Settings:
    f = _file_settings()
    if conn_id and profile:
        raise Stop("give --profile (an AWS profile) or --conn-id (an Airflow connection), not both")
    if not (conn_id or profile or setting("SCIOPS_AWS_CONN_ID", None)) and f.get("conn_id") and f.get("profile"):
        raise Stop(f"{setting('SCIOPS_CONFIG')}: conn_id and profile are both set; keep one (profile: an AWS profile, "
                   "conn_id: an Airflow connection)")
    if not profile:
        conn_id = conn_id or setting("SCIOPS_AWS_CONN_ID", None) or f.get("conn_id")
    return Settings(api_url=(api_url or setting("SCIOPS_API_URL") or f.get("api_url")
                             or "http://localhost:8080").rstrip("/"),
                    user=user or setting("SCIOPS_USER") or f.get("user") or "airflow",
                    storage_root=storage_root or setting("SCIOPS_STORAGE_ROOT", None) or f.get("storage_root"),
                    conn_id=conn_id, profile=None if conn_id else profile or f.get("profile"),
                    insecure_http=insecure_http)
