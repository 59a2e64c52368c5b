"""Who may read what: every route behind Airflow's authentication and its auth manager's permissions.

A user sees only the runs of DAGs whose runs the auth manager lets them read
(``is_authorized_dag(GET, RUN)``, the check Airflow's own ``/dagRuns`` routes make), in every
list, chart, planner estimate and report.
"""
from __future__ import annotations

from fastapi import Depends

# Imports inside functions here are deliberate: Airflow's plugin manager imports the plugin in every
# Airflow process (scheduler, workers, triggerer, dag-processor); the ledger, charts and planner code load
# only when a page or route is asked for.


def authenticated():
    """The app-wide dependency: a JWT from ``/auth/token`` or the UI's session cookie."""
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return Depends(requires_authenticated())


def may_read_runs(user, dag_ids: set[str]) -> set[str]:
    """The DAGs among ``dag_ids`` whose runs the auth manager lets ``user`` read.

    The same question Airflow's own ``GET /dagRuns`` asks (``is_authorized_dag`` with method
    GET and entity RUN, with the DAG's team in multi-team mode), so the plugin never shows
    more than the Airflow UI would: with the simple auth manager every role may read every
    DAG; with FAB or Keycloak, per-DAG permissions hold here too.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    teams = DagModel.get_dag_id_to_team_name_mapping(sorted(dag_ids)) if dag_ids else {}
    manager = get_auth_manager()
    return {d for d in dag_ids if manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                             details=DagDetails(id=d, team_name=teams.get(d)),
                                                             user=user)}


def _user():
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


#: A route parameter's default: the requesting user.
User = _user()


def _readable(user=User) -> set[str]:
    """A dependency: the DAG ids (of those in the ledger) whose runs the requesting user may read."""
    from sciops.accounting import ledger

    return may_read_runs(user, ledger.dag_ids())


#: A route parameter's default: the DAG ids whose runs the requesting user may read.
Readable = Depends(_readable)
