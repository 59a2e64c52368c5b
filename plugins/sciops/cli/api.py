"""Airflow's REST API as the ``sciops`` command uses it: a JWT from ``/auth/token``, then JSON calls.

A call Airflow refuses becomes a :class:`~sciops.cli.settings.Stop`: exit 2 for what the user
gave (400, 404, 422), 3 for Airflow itself (unreachable — :class:`Unreachable`, which ``--wait``
rides out —, the login refused, anything else). A token refused after an api-server restart is
renewed once with the same login.
"""
from __future__ import annotations

import re
import sys
from typing import Any
from urllib.parse import quote

import typer

from sciops.cli.settings import EXIT_AIRFLOW, EXIT_BAD_INPUT, Settings, Stop
from sciops.cli.terminal import cleartext_problem
from sciops.settings import setting

DAG_ID = "fiji_project"


class Unreachable(Stop):
    """Airflow did not answer (refused connection, timeout): an api-server restarting looks like this."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_AIRFLOW)


class Airflow:
    """Airflow's REST API with a JWT from ``/auth/token`` (the password goes there and nowhere else)."""

    def __init__(self, s: Settings):
        import httpx

        self.base = s.api_url
        problem = cleartext_problem(s.api_url or "", s.insecure_http)
        if problem:   # before the password is asked for or read: it must not go anywhere in clear
            raise Stop(problem)
        password = setting("SCIOPS_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise Stop("no password: set SCIOPS_PASSWORD or run from a terminal to be asked", EXIT_AIRFLOW)
            password = typer.prompt(f"Airflow password for {s.user}", hide_input=True)
        self.http = httpx.Client(base_url=self.base, timeout=30)
        self._login = {"username": s.user, "password": password}   # kept in memory only: a renewed token
        try:
            self._token()
        except Unreachable as exc:
            raise Stop(f"{exc}; check --api-url or SCIOPS_API_URL", EXIT_AIRFLOW) from None

    def _token(self) -> None:
        import httpx

        user = self._login["username"]
        try:
            r = self.http.post("/auth/token", json=self._login)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach Airflow at {self.base} ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise Stop(f"Airflow at {self.base} refused the login of {user!r}: wrong user or password",
                       EXIT_AIRFLOW)
        if r.status_code >= 400 or "access_token" not in r.text:
            raise Stop(f"Airflow at {self.base} answered {r.status_code} to the login; is this Airflow's URL?",
                       EXIT_AIRFLOW)
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def call(self, method: str, path: str, **kw) -> Any:
        import httpx

        for renewed in (False, True):
            try:
                r = self.http.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise Unreachable(f"cannot reach Airflow at {self.base} ({type(exc).__name__})") from None
            if r.status_code != 401 or renewed:
                break
            self._token()   # a restarted api-server with a new JWT secret refuses the old token
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:300]
            raise Stop(f"Airflow refused {method} {path}: {r.status_code} {_detail(detail)}",
                       EXIT_BAD_INPUT if r.status_code in (400, 404, 422) else EXIT_AIRFLOW)
        return r.json() if r.content else None

    def run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The DAG run, or None when Airflow has none of that id (deleted, or never)."""
        try:
            return self.run(run_id)
        except Stop as exc:
            if exc.code == EXIT_BAD_INPUT:   # 404
                return None
            raise

    def paused(self) -> bool:
        """Whether fiji_project is paused (its runs then wait, queued); False when Airflow does not say."""
        try:
            return bool((self.call("GET", f"/api/v2/dags/{DAG_ID}") or {}).get("is_paused"))
        except Unreachable:
            raise
        except Stop:   # a role that may read runs but not the DAG: no hint rather than no progress
            return False

    def ledger(self, project: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"project": project} if project else {})}
        return self.call("GET", "/sciops/api/runs", params=params)["runs"]

    def progress(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", f"/sciops/api/runs/{DAG_ID}/{quote(run_id, safe='')}/progress")
        except Unreachable:
            raise
        except Stop:   # an api-server without the plugin's route, or a run it cannot see: Airflow's state only
            return None

    def report_url(self, run_id: str) -> str:
        return f"{self.base}/sciops/runs/{DAG_ID}/{quote(run_id, safe='')}/report"


def _detail(detail: Any) -> str:
    """One line: pydantic's errors as ``field: what is wrong``; a Param's refusal (``Invalid input for param
    images_per_task: -1 is less than the minimum of 0`` followed by jsonschema's dump of the schema) as
    ``images_per_task: -1 is less than the minimum of 0``."""
    if isinstance(detail, list):   # pydantic's errors: which field, what is wrong
        return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    text = str(detail).strip()
    first = text.split("\n", 1)[0].strip()
    param = re.match(r"Invalid input for param (\S+?):\s*(.*)", first)
    if param:
        return f"{param.group(1)}: {param.group(2) or 'refused by its schema'}"
    return first if len(first) <= 300 else first[:300] + "…"
