"""Alerts through Airflow notifiers, delivered for real: e-mail to an SMTP server (aiosmtpd) and JSON to an
HTTP server, both started by the test; and the monitor DAG alerting a webhook through Airflow.

The notifiers are Airflow's own (the SMTP provider's ``SmtpNotifier`` over the connection
``smtp_default``, given as ``AIRFLOW_CONN_SMTP_DEFAULT`` as the local stack does) and ctloop's JSON
webhook notifier; nothing is mocked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from ctloop.config.spec import load_spec
from ctloop.monitoring.alerts import from_checks, gate_refused, rollback

from tests.conftest import free_port, make_pipeline

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))

FAILED = {"checks": [
    {"name": "drift", "passed": False, "detail": "2 of 12 features drifted (amount, channel)",
     "evidence": {"drifted_features": {"amount": {"psi": 0.41}}, "report": "file:///lake/reports/drift.html",
                  "slices": [{"name": "online", "field": "channel", "equals": "online"}]}},
    {"name": "quality", "passed": True, "detail": "suite passed"},
    {"name": "performance_pos", "passed": False, "detail": "realized pr_auc 0.21 vs champion holdout 0.55",
     "evidence": {"decay": 0.62}},
]}


class Mailbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "ctloop@example.com", "retry_limit": 0}}))
    yield box
    controller.stop()


def spec_with(tmp_path: Path, alerts: list[dict[str, Any]]) -> Any:
    pipelines, _ = make_pipeline(tmp_path, **{"monitoring.alerts": alerts})
    return load_spec("fraud", pipelines)


def body(message: Message) -> str:
    parts = [p for p in message.walk() if p.get_content_type() == "text/html"]
    return parts[0].get_payload(decode=True).decode()


def test_failed_checks_are_emailed_with_their_evidence(tmp_path: Path, smtp_server: Mailbox) -> None:
    from ctloop_airflow.notifiers import send

    spec = spec_with(tmp_path, [{"kind": "email", "to": ["oncall@example.com", "ml@example.com"],
                                 "on": ["drift", "performance"]},
                                {"kind": "email", "to": ["quality-only@example.com"], "on": ["quality"]}])
    alerts = from_checks("fraud", FAILED, "scheduled__2026-01-20T10:00:00+00:00")
    assert [a.event for a in alerts] == ["drift", "performance"]  # the passed quality check alerts no one
    assert sum(send(spec, alert, {}) for alert in alerts) == 2

    assert len(smtp_server.messages) == 2
    (drift_to, drift), (perf_to, perf) = smtp_server.messages
    assert drift_to == perf_to == ["oncall@example.com", "ml@example.com"]
    assert drift["Subject"] == "ctloop fraud: drift check failed (drift)"
    assert perf["Subject"] == "ctloop fraud: performance check failed (performance_pos)"
    text = body(drift)
    assert "drift: 2 of 12 features drifted (amount, channel)" in text
    assert "&quot;psi&quot;: 0.41" in text and "file:///lake/reports/drift.html" in text
    assert "scheduled__2026-01-20T10:00:00+00:00" in text
    assert "&quot;decay&quot;: 0.62" in body(perf)


def test_task_failure_callback_emails_through_airflow_templates(tmp_path: Path, smtp_server: Mailbox) -> None:
    from ctloop_airflow import dagkit

    spec = spec_with(tmp_path, [{"kind": "email", "to": ["oncall@example.com"], "on": ["task_failed"]}])
    callbacks = dagkit.default_args(spec)["on_failure_callback"]
    ti = type("TI", (), {"task_id": "train", "dag_id": "fraud_train", "try_number": 3, "log_url": "http://af/log"})()
    for callback in callbacks:
        callback({"ti": ti, "run_id": "manual__1", "exception": RuntimeError("out of memory")})
    [(to, message)] = smtp_server.messages
    assert to == ["oncall@example.com"]
    assert message["Subject"] == "ctloop fraud: task train failed in fraud_train"
    assert "run manual__1, try 3: out of memory" in body(message)
    assert "on_failure_callback" not in dagkit.default_args(spec_with(tmp_path / "quiet", []))


def test_gate_refusal_and_rollback_reach_slack_and_webhook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          webhook_server: tuple[str, list[dict[str, Any]]]) -> None:
    from ctloop_airflow.notifiers import send

    url, received = webhook_server
    # the Slack channel names an Airflow connection whose host is the URL: the secret stays out of the spec
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    spec = spec_with(tmp_path, [{"kind": "slack", "url": "slack_alerts", "on": ["gate_refused"]},
                                {"kind": "webhook", "url": url, "on": ["rollback", "gate_refused"]}])
    evaluation = {"run_id": "r1", "passed": False, "checks": [
        {"check": "slice.online", "passed": False, "detail": "pr_auc 0.30 vs champion 0.41: regression +0.11"}]}
    refused = gate_refused("fraud", evaluation, "evaluation gate refused (pr_auc 0.3 vs 0.4)", "run-7")
    assert send(spec, refused, {}) == 2
    deploy = {"outcome": "rolled_back", "version": "5", "reason": "rollback: error rate 0.2", "live_slot": "blue",
              "champion": "4"}
    assert send(spec, rollback("fraud", deploy, "deploy of v5 rolled back to blue", "run-7"), {}) == 1
    assert rollback("fraud", {**deploy, "outcome": "promoted"}, "deployed", "run-7") is None

    slack, hook, back = received
    assert slack["text"].startswith("*ctloop fraud: evaluation gate refused the candidate*\ntrain run run-7")
    assert hook["event"] == "gate_refused"
    assert hook["evidence"]["failed_checks"][0]["check"] == "slice.online"
    assert back["event"] == "rollback" and back["evidence"]["version"] == "5"
    assert back["subject"] == "ctloop fraud: deploy of v5 rolled_back"


def test_an_unreachable_channel_does_not_fail_the_task(tmp_path: Path) -> None:
    from ctloop_airflow.notifiers import send

    spec = spec_with(tmp_path, [{"kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/", "on": ["drift"]}])
    assert send(spec, from_checks("fraud", FAILED, "r")[0], {}) == 0
