"""Slack messages: run started, run ended, teardown failed.

Through the Slack provider: a ``slackwebhook`` connection (an incoming webhook) or a
``slack`` API connection (``chat.postMessage``; the channel in its extras as ``channel``).
The connection is the run's ``slack_conn_id``, else ``SCIOPS_SLACK_CONN_ID``, else
``sciops_slack``; without one, nothing is sent (and the log says so). A message that cannot
be sent, or that Slack does not take within ``SCIOPS_SLACK_TIMEOUT_SECONDS``, is a warning naming
the connection and where it points, never a failed run. Messages are sent from tasks, not from DAG-level
callbacks, so they work the same under the scheduler and under ``dag.test()``.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

from sciops.connections import get_connection
from sciops.reporting.durations import duration as duration_text
from sciops.run.runinfo import RunInfo
from sciops.settings import setting

log = logging.getLogger(__name__)


class _Redact(logging.Filter):
    """Replaces the Slack secrets in a record: slack_sdk logs request URLs (a webhook URL holds its token)."""

    TOKENS = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|(?<=/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+")

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        for secret in sorted(self.secrets, key=len, reverse=True):
            msg = msg.replace(secret, "***")
        record.msg, record.args = self.TOKENS.sub("***", msg), None
        return True


_redact = _Redact()
#: The logger handed to slack_sdk's clients (instead of the hook's own), so that their retry
#: lines ("Going to retry the same request: POST <webhook URL>") reach the log redacted.
client_log = logging.getLogger("sciops.reporting.notify.slack_client")
client_log.addFilter(_redact)


def timeout_seconds() -> int:
    """How long a message may take (``SCIOPS_SLACK_TIMEOUT_SECONDS``, whole seconds, at least 1)."""
    return max(1, math.ceil(setting("SCIOPS_SLACK_TIMEOUT_SECONDS")))


def _endpoint(conn) -> str:
    """Where a Slack connection sends, without its secrets: ``host:port`` of the webhook or API base."""
    extra = conn.extra_dejson or {}
    url = (extra.get("base_url") or "https://slack.com/api/") if conn.conn_type == "slack" else \
        (conn.host or "https://hooks.slack.com/services")
    return urlsplit(url if "//" in url else f"https://{url}").netloc or url


def _timed_out(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None)
    return isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(exc).lower()


def deliver(text: str, conn_id: str | None = None) -> str | None:
    """Send ``text``; ``None`` when it was sent or there is no Slack connection, else why it was not
    (logged as a warning: a lost message never fails a run). Each try waits at most
    :func:`timeout_seconds` for Slack to answer; slack_sdk retries a refused or reset connection once."""
    conn_id = conn_id or setting("SCIOPS_SLACK_CONN_ID")
    conn = get_connection(conn_id)
    if conn is None:
        log.info("no Slack connection %r: not sent: %s", conn_id, text.splitlines()[0])
        return None
    _redact.secrets.update(x for x in (conn.password, (conn.extra_dejson or {}).get("webhook_token")) if x)
    timeout = timeout_seconds()
    try:
        if conn.conn_type == "slack":
            from airflow.providers.slack.hooks.slack import SlackHook

            channel = (conn.extra_dejson or {}).get("channel") or setting("SCIOPS_SLACK_CHANNEL")
            SlackHook(slack_conn_id=conn_id, logger=client_log, timeout=timeout).call(
                "chat.postMessage", json={"channel": channel, "text": text})
        else:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            SlackWebhookHook(slack_webhook_conn_id=conn_id, logger=client_log, timeout=timeout).send(text=text)
    except Exception as exc:  # noqa: BLE001 - a lost message must not fail the run
        if _timed_out(exc):
            problem = (f"Slack (connection {conn_id}, {_endpoint(conn)}) did not answer within {timeout} s "
                       "(SCIOPS_SLACK_TIMEOUT_SECONDS): the message was not sent")
        else:
            reason = str(exc)[:300]
            for secret in _redact.secrets:
                reason = reason.replace(secret, "***")
            problem = (f"Slack message not sent through {conn_id!r} ({_endpoint(conn)}): "
                       f"{type(exc).__name__}: {reason}")
        log.warning("%s", problem)
        return problem
    log.info("Slack: %s", text.splitlines()[0])
    return None


def send(text: str, conn_id: str | None = None) -> bool:
    """:func:`deliver`, as whether a message went out (False: no connection, or not sent)."""
    if get_connection(conn_id or setting("SCIOPS_SLACK_CONN_ID")) is None:
        deliver(text, conn_id)   # logs that there is none
        return False
    return deliver(text, conn_id) is None


def report_url(dag_id: str, run_id: str) -> str:
    base = os.environ.get("AIRFLOW__API__BASE_URL") or "http://localhost:8080"
    return f"{base.rstrip('/')}/sciops/runs/{dag_id}/{run_id}/report"


def run_started(info) -> bool:
    """``info``: the run's :class:`~sciops.run.runinfo.RunInfo` (or its XCom dict)."""
    info = RunInfo.of(info)
    cfg = info.config
    with info.backend() as backend:
        where = backend.where()
    budget = f", budget {cfg.budget_usd} USD" if cfg.budget_usd else ""
    return send(f":microscope: SciOps run started: project *{info.project}*, {info.images} images, "
                f"macro {cfg.macro}, on {where}{budget} (run {info.run_id})", cfg.slack_conn_id)


def run_ended(doc: dict[str, Any]) -> str | None:
    """The end message, with the run's verdict (``doc["status"]``, as run.json and the ledger say it) and,
    for a run that did not succeed, why. ``None`` when sent (or no connection), else why not."""
    images, cost = doc.get("images") or {}, doc.get("cost") or {}
    duration = (doc["ended_at"] - doc["started_at"]) if doc.get("ended_at") and doc.get("started_at") else None
    icon = ":white_check_mark:" if doc["status"] == "success" else ":x:"
    per_image = doc.get("cost_per_image_usd")
    text = (f"{icon} SciOps run {doc['status']}: project *{doc['project']}*, images ok {images.get('ok')}, "
            f"failed {images.get('failed')} of {images.get('total')}; duration {duration_text(duration) or '?'}; "
            f"cost {cost.get('total_usd', 0):.2f} USD"
            + (f" ({per_image:.4f} USD per image)" if per_image is not None else "")
            + (f"\nWhy: {str(doc['reason'])[:500]}" if doc["status"] != "success" and doc.get("reason") else "")
            + "".join(f"\n:warning: {w['check']}: {str(w['says'])[:300]}"   # the results' sanity warnings
                      for w in ((doc.get("results") or {}).get("warnings") or [])[:3])
            + f"\nReport: {report_url(doc.get('dag_id') or 'fiji_project', doc['airflow_run_id'])}")
    return deliver(text, (doc.get("params") or {}).get("slack_conn_id"))


def teardown_failed(cluster: str, region: str | None, error: Any, conn_id: str | None = None) -> bool:
    return send(f":rotating_light: SciOps teardown FAILED: cluster {cluster} may still be running and costing money. "
                f"Delete it: pcluster delete-cluster --cluster-name {cluster} --region {region or '<region>'} "
                f"({error})", conn_id)
