"""``create_cluster`` and ``delete_cluster``: an ephemeral ParallelCluster for one run.

Both take the run's info (``validate``'s result, an XComArg) as ``run_info``. On other
backends both return None (no cluster to make: ``create_cluster`` is the DAG's setup task, and
a setup must succeed for what follows; ``delete_cluster`` succeeds too, for the reason in its
``execute``). Both wait in the
triggerer (:class:`~sciops.triggers.cluster.PClusterStateTrigger`). Both are idempotent:
the cluster's name comes from the Airflow run id, so a retried create finds the cluster
it made instead of making another, and a delete of a cluster already gone succeeds.
``delete_cluster`` is the DAG's teardown: it runs whatever failed, and its failure fails
the run and logs an alert with the command to delete the cluster by hand.
"""
from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# Imports inside functions here are deliberate: the DAG processor imports this module when it parses
# dags/fiji_project.py (every 30 s), and tests/dags/test_dagbag.py keeps pandas, pyarrow, boto3, botocore,
# paramiko, asyncssh and the task bodies out of that parse; the library is imported when the task runs.

log = logging.getLogger(__name__)


def _run(info: dict[str, Any] | None):
    """The run's record and its backend, or None when the backend makes no cluster of its own."""
    from sciops.clusters.parallelcluster import PClusterBackend
    from sciops.run.runinfo import RunInfo

    if not info:
        raise AirflowSkipException("validate did not pass: no cluster was asked for")
    info = RunInfo.of(info)
    backend = info.backend()
    return (info, backend) if isinstance(backend, PClusterBackend) else None


def _cli(info, backend):
    from sciops.clusters import parallelcluster as pc

    settings = backend.settings(info.project, info.airflow_run_id)
    return settings, pc.cluster_name(info.airflow_run_id), pc.PCluster(settings.region,
                                                                       env=pc.aws_env(backend.cfg.aws_conn_id))


def _begin(info, backend, phase_name: str):
    """Both operators start alike: the run, its cluster's name and CLI, the phase, what pcluster says now."""
    from sciops.phases import phase_start

    settings, name, cli = _cli(info, backend)
    phase_start(info.run_dir, phase_name, keep_start=True)
    return info, backend.cfg, settings, name, cli, cli.describe(name)


class PClusterCreateOperator(BaseOperator):
    """Create the run's cluster (or find it), wait until it is ready; returns its head node address and key.

    :param run_info: ``validate``'s result (templated: pass the XComArg).
    """

    template_fields = ("run_info",)

    def __init__(self, *, run_info: Any, **kwargs):
        super().__init__(**kwargs)
        self.run_info = run_info

    def execute(self, context):
        from sciops.clusters import parallelcluster as pc
        from sciops.phases import phase_end

        run = _run(self.run_info)
        if run is None:
            log.info("backend %r: no cluster to create", self.run_info["config"]["backend"])
            return None
        info, cfg, settings, name, cli, state = _begin(*run, "cluster_create")
        if state["state"] == pc.READY:
            log.info("cluster %s already exists and is ready (a retry): not creating another", name)
            return self._done(info, cfg, settings, name, state)
        if state["state"] in (pc.FAILED, pc.DELETING):
            err = RuntimeError(f"cluster {name} is {state['status']}: it is torn down by delete_cluster; "
                               "trigger a new run")
            phase_end(info.run_dir, "cluster_create", err)
            raise AirflowFailException(str(err))
        if state["state"] == pc.GONE:
            cli.create(name, str(pc.write_cluster_config(info.run_dir, settings)))
            log.info("creating cluster %s in %s (%s x up to %d, %s)", name, settings.region,
                     settings.compute_instance_type, settings.max_count, "spot" if settings.spot else "on-demand")
        else:
            log.info("cluster %s is being created already (a retry): waiting for it", name)
        self._wait(name, settings.region, cfg, "ready")

    def _wait(self, name, region, cfg, want):
        from sciops.triggers.cluster import PClusterStateTrigger

        self.defer(trigger=PClusterStateTrigger(name, region, want, aws_conn_id=cfg.aws_conn_id),
                   method_name="execute_complete")

    def execute_complete(self, context, event: dict[str, Any]):
        from sciops.phases import phase_end

        info, backend = _run(self.run_info)
        cfg = backend.cfg
        settings, name, cli = _cli(info, backend)
        if not event.get("ok"):
            err = RuntimeError(f"cluster {name} did not become ready: {event.get('status')} {event.get('message')}")
            phase_end(info.run_dir, "cluster_create", err)
            raise AirflowFailException(f"{err}; delete_cluster tears it down")
        return self._done(info, cfg, settings, name, event)

    def _done(self, info, cfg, settings, name, state):
        from sciops.phases import phase_end

        from sciops.clusters import parallelcluster as pc
        from sciops.errors import ClusterError

        if not state.get("head_node_ip") or not state.get("head_node_instance_id"):
            err = RuntimeError(f"cluster {name} is ready but pcluster reports no head node address or instance id")
            phase_end(info.run_dir, "cluster_create", err)
            raise AirflowFailException(str(err))
        try:   # pinned before anything is sent to the head node (see parallelcluster.head_node_host_key)
            host_key = pc.head_node_host_key(state["head_node_instance_id"], settings.region,
                                             cfg.aws_conn_id)
        except ClusterError as err:
            phase_end(info.run_dir, "cluster_create", err)
            raise AirflowFailException(f"{err}; delete_cluster tears the cluster down") from None
        phase_end(info.run_dir, "cluster_create")
        log.info("cluster %s ready; head node %s (%s), host key %s pinned from its console output", name,
                 state["head_node_ip"], state["head_node_instance_id"], host_key[:40])
        return {"cluster_name": name, "region": settings.region, "head_node_ip": state["head_node_ip"],
                "head_node_instance_id": state["head_node_instance_id"], "head_node_host_key": host_key,
                "instance_types": {"head": settings.head_node_instance_type,
                                   "compute": settings.compute_instance_type}}


def teardown_failed_alert(context) -> None:
    """A cluster that could not be deleted keeps costing money: say so loudly, with the fix."""
    info = getattr(context.get("task"), "run_info", None)
    info = info if isinstance(info, dict) else {}
    from sciops.clusters import parallelcluster as pc

    name = pc.cluster_name(info.get("airflow_run_id", context.get("run_id", "")))
    region = ((info.get("config") or {}).get("cluster") or {}).get("region")
    log.error("TEARDOWN FAILED: cluster %s may still be running and costing money. Delete it by hand: "
              "pcluster delete-cluster --cluster-name %s --region %s; the hourly cluster_sweeper DAG "
              "retries too. Error: %s", name, name, region, context.get("exception"))
    from sciops.reporting.notify import teardown_failed

    teardown_failed(name, region, context.get("exception"), (info.get("config") or {}).get("slack_conn_id"))


class PClusterDeleteOperator(BaseOperator):
    """Delete the run's cluster and wait until it is gone. Harmless when it never existed.

    :param run_info: ``validate``'s result (templated: pass the XComArg).
    """

    template_fields = ("run_info",)

    def __init__(self, *, run_info: Any, **kwargs):
        kwargs.setdefault("on_failure_callback", teardown_failed_alert)
        super().__init__(**kwargs)
        self.run_info = run_info

    def execute(self, context):
        from sciops.clusters import parallelcluster as pc
        from sciops.phases import phase_end

        run = _run(self.run_info)
        if run is None:
            # Succeeds, as create_cluster does, rather than skipping: Airflow 3.3's task supervisor sends a
            # success to the api-server as the task returns, but a skip only once it has seen the process
            # exit, which it checks at most every [workers] min_heartbeat_interval (5 s). On the local
            # backend this task is on the critical path (record waits for it): as a skip it took 5.4-6.1 s
            # from start to end in the deployment (its own log: 0.4-1.0 s), a success 0.4 s.
            log.info("backend %r: no cluster to delete", self.run_info["config"]["backend"])
            return None
        info, cfg, settings, name, cli, state = _begin(*run, "teardown")
        if state["state"] == pc.GONE:
            phase_end(info.run_dir, "teardown")
            log.info("cluster %s does not exist (never made, or already deleted)", name)
            return {"cluster_name": name, "deleted": True, "already_gone": True}
        if state["state"] != pc.DELETING:
            cli.delete(name)
            log.info("deleting cluster %s", name)
        from sciops.triggers.cluster import PClusterStateTrigger

        self.defer(trigger=PClusterStateTrigger(name, settings.region, pc.GONE, aws_conn_id=cfg.aws_conn_id),
                   method_name="execute_complete")

    def execute_complete(self, context, event: dict[str, Any]):
        from sciops.phases import phase_end

        info, _ = _run(self.run_info)
        name = event.get("name")
        if not event.get("ok"):
            err = RuntimeError(f"cluster {name} was not deleted: {event.get('status')} {event.get('message')}")
            phase_end(info.run_dir, "teardown", err)
            raise AirflowFailException(str(err))
        phase_end(info.run_dir, "teardown")
        log.info("cluster %s deleted", name)
        return {"cluster_name": name, "deleted": True, "already_gone": False}
