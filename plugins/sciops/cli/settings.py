"""The ``sciops`` command's settings and its one-line errors with their exit status.

Settings come from flags, else the environment (``SCIOPS_API_URL``, ``SCIOPS_USER``,
``SCIOPS_STORAGE_ROOT``, ``SCIOPS_AWS_CONN_ID``), else the config file (``SCIOPS_CONFIG``, by
default ``~/.config/sciops/config.toml``: ``api_url``, ``user``, ``storage_root``, ``conn_id``;
never a password), else the defaults (``http://localhost:8080``, user ``airflow``).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

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


def _file_settings() -> dict[str, str]:
    path = Path(setting("SCIOPS_CONFIG")).expanduser()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Stop(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    if "password" in data:
        raise Stop(f"{path} holds a password: remove it (use SCIOPS_PASSWORD, or type it when asked)")
    return {k: str(v) for k, v in data.items()}


def settings(api_url: str | None = None, user: str | None = None, storage_root: str | None = None,
             conn_id: str | None = None) -> Settings:
    f = _file_settings()
    return Settings(api_url=(api_url or setting("SCIOPS_API_URL") or f.get("api_url")
                             or "http://localhost:8080").rstrip("/"),
                    user=user or setting("SCIOPS_USER") or f.get("user") or "airflow",
                    storage_root=storage_root or setting("SCIOPS_STORAGE_ROOT", None) or f.get("storage_root"),
                    conn_id=conn_id or setting("SCIOPS_AWS_CONN_ID", None) or f.get("conn_id"))
