"""Airflow notifiers for ctloop's alerts (``ctloop.monitoring.alerts`` composes them, these deliver).

E-mail goes through the SMTP provider's ``SmtpNotifier`` over the Airflow connection ``smtp_default``
(``ctloop stack up`` sets it from ``CTLOOP_SMTP_URL``; give the sender as its ``from_email`` extra).
Slack and generic webhooks get ``JsonWebhookNotifier``: one JSON POST with the standard library, so
no Slack provider is needed (Slack's incoming webhooks read ``text``). A channel's ``url`` is the URL,
or the id of an Airflow connection whose host holds it (keeps the secret out of the spec).

Imported only where a spec names alert channels, so DAG files without alerts pay nothing at parse time.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier
from ctloop.config.spec import AlertChannel, PipelineSpec
from ctloop.monitoring.alerts import Alert, channels

log = logging.getLogger(__name__)
TIMEOUT_S = 10
SMTP_CONN_ID = "smtp_default"


class JsonWebhookNotifier(BaseNotifier):
    """POST ``payload`` as JSON to ``url`` (or to the host of the Airflow connection named ``url``)."""

    template_fields = ("payload",)

    def __init__(self, *, url: str, payload: dict[str, Any]) -> None:
        super().__init__()
        self.url = url
        self.payload = payload

    def target(self) -> str:
        if self.url.startswith(("http://", "https://")):
            return self.url
        from airflow.sdk import BaseHook

        host = BaseHook.get_connection(self.url).host or ""
        if not host.startswith(("http://", "https://")):
            raise ValueError(f"connection {self.url!r}: its host must be the webhook URL")
        return host

    def notify(self, context: Any) -> None:
        request = urllib.request.Request(self.target(), data=json.dumps(self.payload, default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - the spec's URL
            if response.status >= 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")


def _raw(text: str) -> str:
    """Text Jinja leaves as it is (notifiers render their fields; evidence may hold braces)."""
    return "{% raw %}" + text.replace("{% endraw %}", "{ % endraw % }") + "{% endraw %}"


def notifier(channel: AlertChannel, alert: Alert, *, templated: bool = False) -> BaseNotifier:
    """The notifier that tells ``channel`` about ``alert``; ``templated``: its text holds Airflow templates."""
    keep = (lambda s: s) if templated else _raw
    if channel.kind == "email":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(to=list(channel.to), subject=keep(alert.subject), html_content=keep(alert.html),
                            smtp_conn_id=SMTP_CONN_ID)
    if not channel.url:
        raise ValueError(f"alert channel {channel.kind}: give its url (or an Airflow connection id)")
    if channel.kind == "slack":
        payload: dict[str, Any] = {"text": keep(f"*{alert.subject}*\n{alert.text}")}
    else:
        payload = {k: keep(v) if isinstance(v, str) else v for k, v in alert.payload().items()}
    return JsonWebhookNotifier(url=channel.url, payload=payload)


def notifiers(spec: PipelineSpec, alert: Alert, *, templated: bool = False) -> list[BaseNotifier]:
    return [notifier(c, alert, templated=templated) for c in channels(spec, alert.event)]


def send(spec: PipelineSpec, alert: Alert | None, context: Any) -> int:
    """Deliver ``alert`` to its channels from inside a task; a channel that fails is logged, never fatal
    (an unreachable mail server must not fail a training run). Returns how many were delivered."""
    if alert is None:
        return 0
    sent = 0
    for each in notifiers(spec, alert):
        try:
            each(context)
            sent += 1
        except Exception:  # noqa: BLE001 - logged with its traceback; the task's own outcome stands
            log.exception("alert %s to %s failed", alert.event, type(each).__name__)
    return sent
