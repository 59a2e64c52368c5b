"""Slack messages through the provider's hooks, captured by an HTTP receiver on 127.0.0.1."""
from __future__ import annotations

from sciops.reporting import notify


def test_webhook_and_web_api_connections(slack_receiver):
    assert notify.send("hello webhook")
    assert notify.send("hello api", conn_id="sciops_slack_api")
    hook, api = slack_receiver
    assert hook["path"] == "/T0000/B0000/not-a-real-token" and hook["json"]["text"] == "hello webhook"
    assert api["path"] == "/api/chat.postMessage" and api["json"] == {"channel": "#imaging", "text": "hello api"}
    assert api["auth"] == "Bearer xoxb-not-a-real-token"


def test_no_connection_no_message_and_no_failure(slack_receiver, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SCIOPS_SLACK")
    assert notify.send("nobody listens") is False
    assert notify.send("broken", conn_id="sciops_slack_api") is True
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_DOWN", '{"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", '
                                                         '"password": "T/B/x"}')
    assert notify.send("endpoint down", conn_id="sciops_slack_down") is False  # a warning, not an exception


def test_tokens_never_reach_the_log_when_slack_is_down(monkeypatch, caplog):
    """slack_sdk's retry handler logs "Going to retry the same request: POST <url>" at INFO: the URL holds the token."""
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_DOWN", '{"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", '
                                                         '"password": "T0000/B0000/SECRETWEBHOOKq1"}')
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_API_DOWN", '{"conn_type": "slack", "password": "xoxb-SECRETAPIq2", '
                                                             '"extra": {"base_url": "http://127.0.0.1:9/api/"}}')
    assert notify.send("down", conn_id="sciops_slack_down") is False
    assert notify.send("down", conn_id="sciops_slack_api_down") is False
    assert "retry" in caplog.text.lower()  # the retry handler did log: the test saw the lines that leaked
    assert "SECRETWEBHOOKq1" not in caplog.text and "SECRETAPIq2" not in caplog.text, caplog.text
    assert "POST http://127.0.0.1:9/***" in caplog.text  # redacted, not dropped: the line still says what failed


def test_a_slack_that_never_answers_is_named_not_waited_for(silent_listener, monkeypatch, caplog):
    """A webhook and a Web API endpoint that accept and never answer: each message gives up after
    SCIOPS_SLACK_TIMEOUT_SECONDS, naming the connection and where it points (never its token)."""
    import json
    import logging

    caplog.set_level(logging.INFO)
    port = silent_listener()
    monkeypatch.setenv("SCIOPS_SLACK_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_SILENT", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{port}", "password": "T0000/B0000/SECRETq3"}))
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_SLACK_API_SILENT", json.dumps(
        {"conn_type": "slack", "password": "xoxb-SECRETq4", "extra": {"base_url": f"http://127.0.0.1:{port}/api/"}}))
    for conn_id in ("sciops_slack_silent", "sciops_slack_api_silent"):
        said = (f"Slack (connection {conn_id}, 127.0.0.1:{port}) did not answer within 2 s "
                "(SCIOPS_SLACK_TIMEOUT_SECONDS): the message was not sent")
        assert notify.send("nobody answers", conn_id=conn_id) is False
        assert said in caplog.text, caplog.text[-2000:]
        assert notify.deliver("nobody answers", conn_id=conn_id) == said
    assert "SECRETq3" not in caplog.text and "SECRETq4" not in caplog.text


def test_the_end_message_carries_the_results_warnings(slack_receiver):
    doc = {"status": "success", "project": "plate", "images": {"ok": 96, "failed": 0, "total": 96}, "cost": {},
           "airflow_run_id": "manual__1", "started_at": 0, "ended_at": 61,
           "results": {"warnings": [{"check": "fragmenting", "says": "60% of the objects are tiny", "images": ["a"]},
                                    {"check": "empty", "says": "12 of 96 images have count 0", "images": []}]}}
    assert notify.run_ended(doc) is None
    text = slack_receiver[0]["json"]["text"]
    assert ":warning: fragmenting: 60% of the objects are tiny\n:warning: empty: 12 of 96 images have count 0" in text
