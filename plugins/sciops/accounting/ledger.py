"""The run ledger: one row per run, in a database reached through an Airflow connection.

The connection is ``sciops_ledger`` (or ``SCIOPS_LEDGER_CONN_ID``): PostgreSQL in
docker-compose, any SQLAlchemy URL Airflow can express. Without such a connection the
ledger is a SQLite file, ``$AIRFLOW_HOME/sciops_ledger.db``. Rows are written by
``record`` for every run that got past ``validate`` — successful, failed or aborted — and by
``validate`` (or ``sync_up``) for a run refused before its run folder existed (status
``refused``, with the reason); read by the budget estimate, the runs dashboard and the
what-if planner.

Every call is bounded: a connection must be made within ``SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS``
and a statement answered within ``SCIOPS_LEDGER_STATEMENT_TIMEOUT_SECONDS`` (PostgreSQL's
``connect_timeout`` and ``statement_timeout``; SQLite's lock wait). A failure is a
:class:`~sciops.errors.LedgerError` naming the connection and where it points ("the ledger
(connection sciops_ledger, db:5432) did not answer within 10 s while ..."), never a hang.

One row per run, never another run's: :func:`write` replaces a row only for the Airflow run that
wrote it (a retried ``record``), and refuses to replace a row of another Airflow run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, case, create_engine, delete,
                        select)
from sqlalchemy.engine import make_url

from sciops.connections import get_connection
from sciops.errors import LedgerError
from sciops.settings import setting

log = logging.getLogger(__name__)

metadata = MetaData()
runs = Table(
    "sciops_runs", metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("airflow_run_id", String(250)),
    Column("project", String(100), index=True),
    Column("trigger", String(50)),
    Column("status", String(30)),
    Column("backend", String(30)),
    Column("macro", String(250)),
    Column("macro_sha256", String(64), index=True),
    Column("images_total", Integer),
    Column("images_ok", Integer),
    Column("images_failed", Integer),
    Column("started_at", Float, index=True),
    Column("ended_at", Float),
    Column("duration_s", Float),
    Column("task_seconds", Float),
    Column("seconds_per_image", Float),
    Column("node_hours", Float),
    Column("cost_usd", Float),
    Column("cost_per_image_usd", Float),
    Column("instance_type", String(50)),
    Column("params", Text),
    Column("phases", Text),
    Column("cost", Text),
    Column("run_dir", Text),
    Column("report", Text),
    Column("reason", Text),  # why a run was refused or failed (the first failed phase's error)
    Column("key_measure", String(100)),   # what the macro measured: run.json's results.key ...
    Column("key_median", Float),          # ... and its median over the run's images (the dashboard's drift chart)
)
#: Columns added after the first release: a ledger created before them gets them on first use.
ADDED_COLUMNS = ("reason", "key_measure", "key_median")
_engines: dict[str, Any] = {}
#: The Airflow connection each URL came from (:func:`ledger_url`), for the messages.
_conn_ids: dict[str, str] = {}


def ledger_url(conn_id: str | None = None) -> str:
    conn_id = conn_id or setting("SCIOPS_LEDGER_CONN_ID")
    conn = get_connection(conn_id)
    if conn is None:
        home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
        return f"sqlite:///{home}/sciops_ledger.db"
    if conn.conn_type == "sqlite":
        url = f"sqlite:///{conn.host}"
    else:
        url = conn.get_uri()
        # psycopg2 is what Airflow's images ship; SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg2://" + url[len(prefix):]
    _conn_ids[url] = conn_id
    return url


def describe(url: str) -> str:
    """The ledger as its messages name it, without secrets: ``connection sciops_ledger, host:port``."""
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse fails later, with its own words
        return "an unreadable URL"
    if u.get_backend_name() == "sqlite":
        where = f"SQLite file {u.database}"
    else:
        where = f"{u.host or 'localhost'}:{u.port or 'default port'}/{u.database or ''}".rstrip("/")
    conn_id = _conn_ids.get(url)
    return f"connection {conn_id}, {where}" if conn_id else where


def connect_seconds() -> int:
    """``SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS`` as libpq takes it: whole seconds, at least 2."""
    return max(2, math.ceil(setting("SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS")))


def statement_seconds() -> float:
    return max(0.001, setting("SCIOPS_LEDGER_STATEMENT_TIMEOUT_SECONDS"))


def connect_args(url: str) -> dict[str, Any]:
    """The driver's timeouts for ``url``: PostgreSQL's ``connect_timeout`` and ``statement_timeout``
    (as ``options``, after any the URL gives), SQLite's lock wait; nothing for other databases."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        options = " ".join(x for x in (u.query.get("options"), f"-c statement_timeout={int(statement_seconds() * 1000)}")
                           if x and isinstance(x, str))
        return {"connect_timeout": connect_seconds(), "options": options}
    if backend == "sqlite":
        return {"timeout": statement_seconds()}
    return {}


#: Driver errors that mean the database refused what was sent (a constraint, a trigger, a permission).
_REFUSALS = ("IntegrityError", "ProgrammingError", "InternalError", "DataError", "NotSupportedError")


@contextmanager
def reached(url: str, doing: str) -> Iterator[None]:
    """Turn a database error while ``doing`` into a :class:`LedgerError` that names the ledger and says
    whether it did not answer in time, refused, or failed otherwise."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    try:
        yield
    except LedgerError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        said = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
        name = f"the ledger ({describe(url)})"
        lowered = said.lower()
        if "timeout expired" in lowered or "timed out" in lowered or isinstance(orig, TimeoutError):
            msg = (f"{name} did not answer within {connect_seconds()} s while {doing} "
                   f"(SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS): {said}")
        elif "statement timeout" in lowered or "database is locked" in lowered:
            msg = (f"{name} did not answer within {statement_seconds():g} s while {doing} "
                   f"(SCIOPS_LEDGER_STATEMENT_TIMEOUT_SECONDS): {said}")
        elif isinstance(exc, DBAPIError) and type(exc).__name__ in _REFUSALS:
            msg = f"{name} refused {doing}: {said}"
        else:
            msg = f"{name} failed while {doing}: {type(orig).__name__}: {said}"
        raise LedgerError(msg) from exc


def engine(url: str | None = None):
    url = url or ledger_url()
    if url not in _engines:
        with reached(url, "opening the ledger"):
            eng = create_engine(url, future=True, connect_args=connect_args(url))
            metadata.create_all(eng)
            _add_missing_columns(eng)
            for index in runs.indexes:   # create_all leaves an existing table's indexes as they were
                index.create(eng, checkfirst=True)
        _engines[url] = eng
    return _engines[url]


def _add_missing_columns(eng) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each of :data:`ADDED_COLUMNS` an older ledger lacks (nullable: no rewrite)."""
    from sqlalchemy import inspect, text

    have = {c["name"] for c in inspect(eng).get_columns(runs.name)}
    with eng.begin() as conn:
        for name in ADDED_COLUMNS:
            if name not in have:
                col = runs.c[name]
                conn.execute(text(f"ALTER TABLE {runs.name} ADD COLUMN {name} {col.type.compile(eng.dialect)}"))
                log.info("ledger: added column %s to %s", name, runs.name)


def _fit(value: Any, column: str) -> Any:
    """A string cut to its column's length (PostgreSQL refuses longer ones; a refused run's input is anything)."""
    length = getattr(runs.c[column].type, "length", None)
    return value[:length] if isinstance(value, str) and length else value


def row_from_run(doc: dict[str, Any]) -> dict[str, Any]:
    """The ledger row of a ``run.json`` document."""
    images = doc.get("images") or {}
    cost = doc.get("cost") or {}
    ok = images.get("ok") or 0
    task_seconds = (doc.get("array") or {}).get("task_seconds") or 0.0
    started, ended = doc.get("started_at"), doc.get("ended_at")
    node_hours = sum((cost.get("node_hours") or {}).values())
    types = [k.split(" ")[0] for k in (cost.get("node_hours") or {}) if not k.startswith("task-hours")]
    results = doc.get("results") or {}
    key = results.get("key")
    return {
        "dag_id": doc.get("dag_id") or "fiji_project", "run_id": doc["run_id"],
        "airflow_run_id": doc.get("airflow_run_id"), "project": doc.get("project"),
        "trigger": doc.get("trigger"), "status": doc.get("status"),
        "backend": (doc.get("params") or {}).get("backend"),
        "macro": (doc.get("macro") or {}).get("name"), "macro_sha256": (doc.get("macro") or {}).get("sha256"),
        "images_total": images.get("total"), "images_ok": images.get("ok"), "images_failed": images.get("failed"),
        "started_at": started, "ended_at": ended,
        "duration_s": round(ended - started, 3) if started and ended else None,
        "task_seconds": task_seconds, "seconds_per_image": round(task_seconds / ok, 4) if ok else None,
        "node_hours": round(node_hours, 6), "cost_usd": cost.get("total_usd"),
        "cost_per_image_usd": doc.get("cost_per_image_usd"),
        "instance_type": ",".join(sorted(set(types))) or None,
        "params": json.dumps(doc.get("params") or {}, default=str), "phases": json.dumps(doc.get("phases") or {}),
        "cost": json.dumps(cost), "run_dir": doc.get("run_dir"), "report": doc.get("report"),
        "reason": (doc.get("reason") or None) and str(doc["reason"])[:4000],
        "key_measure": key, "key_median": ((results.get("measures") or {}).get(key) or {}).get("median") if key else None,
    }


def write(doc: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """Insert the run's row, or replace the row this same Airflow run wrote (a retried ``record``).

    A row of the same DAG and run id written by another Airflow run is never replaced: a
    :class:`LedgerError` naming both Airflow run ids (two runs at once: the database's primary key
    refuses the second insert).
    """
    url = url or ledger_url()
    row = {k: _fit(v, k) for k, v in row_from_run(doc).items()}
    key = (runs.c.dag_id == row["dag_id"], runs.c.run_id == row["run_id"])
    with reached(url, f"writing the row of run {row['run_id']}"):
        with engine(url).begin() as conn:
            held = conn.execute(select(runs.c.airflow_run_id).where(*key).with_for_update()).first()
            if held is not None and held[0] != row["airflow_run_id"]:
                raise LedgerError(f"the ledger ({describe(url)}) holds run {row['run_id']} of DAG {row['dag_id']} for "
                                  f"Airflow run {held[0]!r}; the row of Airflow run {row['airflow_run_id']!r} does not "
                                  "replace it")
            if held is not None:
                conn.execute(delete(runs).where(*key))
            conn.execute(runs.insert().values(**row))
    return row


#: What the dashboard draws and lists of every run: not the JSON columns (params, phases, cost),
#: which are most of a row's bytes. 10,000 rows: ``bench/bench_scale.py --parts dashboard``.
OVERVIEW_COLUMNS = ("run_id", "airflow_run_id", "dag_id", "project", "macro", "status", "started_at",
                    "duration_s", "cost_usd", "cost_per_image_usd", "images_ok", "images_total", "node_hours",
                    "backend", "reason", "key_measure", "key_median")


def rows(project: str | None = None, macro: str | None = None, limit: int | None = 500,
         url: str | None = None, dag_ids: set[str] | None = None,
         columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` rows (None: all); ``dag_ids`` (None = every DAG) keeps only those DAGs' runs;
    ``columns`` (None = all) the columns read."""
    q = select(*(runs.c[c] for c in columns)) if columns else select(runs)
    q = q.order_by(runs.c.started_at.desc())
    if limit is not None:
        q = q.limit(limit)
    if dag_ids is not None:
        q = q.where(runs.c.dag_id.in_(sorted(dag_ids)))
    if project:
        q = q.where(runs.c.project == project)
    if macro:
        q = q.where((runs.c.macro == macro) | (runs.c.macro_sha256 == macro))
    url = url or ledger_url()
    with reached(url, "reading runs"), engine(url).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def find(dag_id: str, airflow_run_id: str, run_id: str, url: str | None = None) -> dict[str, Any] | None:
    """The row of DAG ``dag_id`` with this Airflow run id, else with this SciOps run id (its folder's name;
    ``airflow_run_id`` itself may be one)."""
    q = select(runs).where(runs.c.dag_id == dag_id,
                           (runs.c.airflow_run_id == airflow_run_id) | runs.c.run_id.in_({run_id, airflow_run_id}))
    url = url or ledger_url()
    with reached(url, f"reading run {run_id}"), engine(url).connect() as conn:
        exact = case((runs.c.airflow_run_id == airflow_run_id, 0), else_=1)
        found = conn.execute(q.order_by(exact, runs.c.started_at.desc()).limit(1)).first()
    return dict(found._mapping) if found else None


def dag_ids(url: str | None = None) -> set[str]:
    """Every DAG id the ledger has runs of."""
    url = url or ledger_url()
    with reached(url, "reading DAG ids"), engine(url).connect() as conn:
        return {r[0] for r in conn.execute(select(runs.c.dag_id).distinct())}


def past_performance(macro_sha256: str | None = None, macro: str | None = None, project: str | None = None,
                     url: str | None = None, dag_ids: set[str] | None = None) -> dict[str, Any] | None:
    """Median task-seconds per image over the successful past runs of a macro (None if none)."""
    found = [r for r in rows(macro=macro_sha256 or macro, url=url, dag_ids=dag_ids)
             if r["status"] == "success" and r["seconds_per_image"]]
    if project:
        found = [r for r in found if r["project"] == project] or found
    if not found:
        return None
    return {"runs": len(found), "seconds_per_image": statistics.median(r["seconds_per_image"] for r in found),
            "run_ids": [r["run_id"] for r in found[:10]]}
