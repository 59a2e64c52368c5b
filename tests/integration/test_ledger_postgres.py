"""The run ledger on PostgreSQL (as in docker-compose), through the Airflow connection sciops_ledger."""
from __future__ import annotations

import uuid

import pytest


def test_ledger_rows_on_postgres(postgres_ledger, monkeypatch):
    from sciops.accounting import ledger

    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", postgres_ledger)
    url = ledger.ledger_url()
    assert url.startswith("postgresql+psycopg2://") and ledger.engine(url).dialect.name == "postgresql"
    project = f"pg-{uuid.uuid4().hex[:8]}"
    for i, status in enumerate(("success", "failed", "budget exceeded")):
        doc = {"run_id": f"manual__{project}-{i}", "airflow_run_id": f"manual__{project}-{i}", "dag_id": "fiji_project",
               "project": project, "trigger": "UI/API", "status": status, "params": {"backend": "existing"},
               "macro": {"name": "count_nuclei", "sha256": "a" * 64},
               "images": {"total": 10, "ok": 10 - 3 * i, "failed": 3 * i}, "started_at": 1000.0 + i,
               "ended_at": 1100.0 + i, "array": {"task_seconds": 20.0}, "phases": {"validate": {"status": "success"}},
               "cost": {"total_usd": 0.5, "node_hours": {"task-hours on n1": 0.01}}, "cost_per_image_usd": 0.05}
        ledger.write(doc, url)
    ledger.write({**doc, "status": "budget exceeded", "cost": {"total_usd": 0.75}}, url)  # a retried record
    rows = {r["status"]: r for r in ledger.rows(project=project, url=url)}
    assert set(rows) == {"success", "failed", "budget exceeded"}
    assert rows["budget exceeded"]["cost_usd"] == pytest.approx(0.75)  # replaced, not duplicated
    assert rows["success"]["seconds_per_image"] == pytest.approx(2.0)
    perf = ledger.past_performance(macro_sha256="a" * 64, project=project, url=url)
    assert perf["runs"] == 1 and perf["seconds_per_image"] == pytest.approx(2.0)


def test_older_ledger_gains_the_reason_column_and_keeps_its_rows(postgres_ledger, monkeypatch):
    """A ledger made before refused runs were recorded: its rows stay, the new column is added once."""
    import subprocess

    from sqlalchemy import create_engine, text

    from helpers import REPO
    from sciops.accounting import ledger
    from sciops.phases import checks
    from sciops.errors import ConfigError

    uri = subprocess.run(["bash", str(REPO / "scripts/testbed/postgres.sh"), "fresh-db", "sciops_old_ledger"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    url = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    old = [c for c in ledger.runs.columns if c.name not in ledger.ADDED_COLUMNS]
    with create_engine(url).begin() as conn:
        cols = ", ".join(f"{c.name} {c.type.compile(conn.dialect)}" for c in old)
        conn.execute(text(f"CREATE TABLE sciops_runs ({cols}, PRIMARY KEY (dag_id, run_id))"))
        conn.execute(text("INSERT INTO sciops_runs (dag_id, run_id, project, status) VALUES "
                          "('fiji_project', 'manual__old', 'legacy', 'success')"))
    ledger._engines.pop(url, None)
    assert [r["run_id"] for r in ledger.rows(project="legacy", url=url)] == ["manual__old"]
    # a refused run's input can be anything: a 300-character project name is cut to its column, not refused
    conf = {"project": "p" * 300}
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", uri)
    with pytest.raises(ConfigError):
        with checks.refusals(conf, "manual__refused-long", "fiji_project", "manual"):
            raise ConfigError([("project", "not a safe project name")])
    row = next(r for r in ledger.rows(url=url) if r["run_id"] == "manual__refused-long")
    assert row["status"] == "refused" and row["project"] == "p" * 100 and "not a safe project name" in row["reason"]


def _doc(run_id: str, airflow_run_id: str, project: str, status: str = "success") -> dict:
    return {"run_id": run_id, "airflow_run_id": airflow_run_id, "dag_id": "fiji_project", "project": project,
            "status": status, "images": {"total": 2, "ok": 2, "failed": 0}, "started_at": 1000.0, "ended_at": 1010.0,
            "phases": {}, "cost": {"total_usd": 0.1}}


def test_a_row_is_replaced_by_its_own_run_only(postgres_ledger, monkeypatch):
    """Two Airflow runs under one SciOps run id (the old folder rule sent x~1 and x+1 to x-1): the second
    row is refused, naming both, and the first stays; the first run's retried record updates its own row."""
    from sciops.accounting import ledger
    from sciops.errors import SciOpsError

    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", postgres_ledger)
    project = f"pg-{uuid.uuid4().hex[:8]}"
    run_id = f"{project}-x-1"
    ledger.write(_doc(run_id, "x~1", project))
    with pytest.raises(SciOpsError) as err:   # a LedgerError
        ledger.write(_doc(run_id, "x+1", project, status="failed"))
    assert "'x~1'" in str(err.value) and "'x+1'" in str(err.value) and "connection sciops_ledger" in str(err.value)
    ledger.write(_doc(run_id, "x~1", project, status="failed"))   # a retried record of the same run
    [row] = ledger.rows(project=project)
    assert row["airflow_run_id"] == "x~1" and row["status"] == "failed"


@pytest.mark.timeout(120)
def test_a_ledger_that_never_answers_is_named_not_waited_for(silent_listener, monkeypatch):
    from sciops.accounting import ledger
    from sciops.errors import SciOpsError

    port = silent_listener()
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", f"postgresql://sciops:secret-pw@127.0.0.1:{port}/sciops_ledger")
    monkeypatch.setenv("SCIOPS_LEDGER_CONNECT_TIMEOUT_SECONDS", "2")
    for call in (lambda: ledger.rows(), lambda: ledger.write(_doc("r", "r", "silent"))):
        with pytest.raises(SciOpsError) as err:   # a LedgerError
            call()
        said = str(err.value)
        assert said.startswith(f"the ledger (connection sciops_ledger, 127.0.0.1:{port}/sciops_ledger) did not "
                               "answer within 2 s") and "secret-pw" not in said


@pytest.mark.timeout(120)
def test_a_statement_the_ledger_does_not_answer_is_named(postgres_ledger, monkeypatch):
    """The real PostgreSQL, its table locked by another session: the write ends at the statement timeout."""
    import subprocess

    from sqlalchemy import create_engine, text

    from helpers import REPO
    from sciops.accounting import ledger
    from sciops.errors import SciOpsError

    uri = subprocess.run(["bash", str(REPO / "scripts/testbed/postgres.sh"), "fresh-db", "sciops_irun_locked"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    url = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    monkeypatch.setenv("SCIOPS_LEDGER_STATEMENT_TIMEOUT_SECONDS", "1")
    ledger._engines.pop(url, None)
    ledger.engine(url)
    with create_engine(url).connect() as locker:   # its transaction holds the lock until the rollback
        locker.execute(text("LOCK TABLE sciops_runs IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(SciOpsError) as err:   # a LedgerError
            ledger.write(_doc("locked-1", "locked~1", "locked"), url)
        locker.rollback()
    assert "did not answer within 1 s while writing the row of run locked-1" in str(err.value)
    assert "statement timeout" in str(err.value)
