"""Looking up an Airflow connection from wherever SciOps code runs."""
from __future__ import annotations


def get_connection(conn_id: str):
    """The connection ``conn_id``, or None when it is defined nowhere.

    Inside a task the Task SDK answers (``BaseHook``); in the API server (the dashboard
    plugin) or a plain process, Airflow's secrets backends and metadata DB do.
    """
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - not in a task, or not defined
        pass
    try:
        from airflow.models.connection import Connection

        return Connection.get_connection_from_secrets(conn_id)
    except Exception:  # noqa: BLE001 - defined nowhere
        return None
