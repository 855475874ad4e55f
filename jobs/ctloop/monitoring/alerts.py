"""Alerts: which of the spec's channels hear of an event, and what they are told. Pure; no Airflow here.

The channels are ``monitoring.alerts`` (``kind`` email, slack or webhook; ``on`` the events it
hears). Airflow's notifiers deliver (``ctloop_airflow.notifiers``: the SMTP provider's
``SmtpNotifier`` over the ``smtp_default`` connection, a small JSON-posting notifier for Slack and
webhooks); this module only composes each alert, so the wording is tested without a server and the
job package needs no Airflow.

Events: ``drift``, ``quality``, ``performance`` (failed monitoring checks, by their name's kind),
``gate_refused`` (a candidate the gate refused), ``rollback`` (a deploy rolled back, or breached its
watch with nothing to roll back to) and ``task_failed`` (any ctloop task, after its retries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ctloop.config.spec import AlertChannel, PipelineSpec

EVENTS = ("drift", "quality", "performance", "gate_refused", "rollback", "task_failed")
CHECK_KINDS = ("drift", "quality", "performance")


@dataclass(frozen=True)
class Alert:
    """One event's message: a subject line, plain-text lines, and the evidence behind it (JSON-able)."""

    pipeline: str
    event: str
    subject: str
    lines: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"alert event {self.event!r} must be one of {', '.join(EVENTS)}")

    @property
    def text(self) -> str:
        evidence = json.dumps(self.evidence, indent=1, sort_keys=True, default=str) if self.evidence else ""
        return "\n".join([*self.lines, *(["", "evidence:", evidence] if evidence else [])])

    @property
    def html(self) -> str:
        from html import escape

        return f"<h3>{escape(self.subject)}</h3><pre>{escape(self.text)}</pre>"

    def payload(self) -> dict[str, Any]:
        """What a generic webhook receives."""
        return {"pipeline": self.pipeline, "event": self.event, "subject": self.subject, "text": self.text,
                "evidence": self.evidence}


def channels(spec: PipelineSpec, event: str) -> list[AlertChannel]:
    """The spec's channels that hear ``event``."""
    if event not in EVENTS:
        raise ValueError(f"alert event {event!r} must be one of {', '.join(EVENTS)}")
    return [c for c in spec.monitoring.alerts if event in c.on]


def from_checks(pipeline: str, result: dict[str, Any] | None, run: str) -> list[Alert]:
    """One alert per kind of failed monitoring check (drift, quality, performance), naming each check."""
    failed = [c for c in (result or {}).get("checks") or [] if not c.get("passed", False)]
    alerts = []
    for kind in CHECK_KINDS:
        mine = [c for c in failed if str(c.get("name", "")).startswith(kind)]
        if mine:
            names = ", ".join(c["name"] for c in mine)
            lines = [f"monitor run {run}:", *(f"- {c['name']}: {c.get('detail') or 'failed'}" for c in mine)]
            alerts.append(Alert(pipeline, kind, f"ctloop {pipeline}: {kind} check failed ({names})", lines,
                                {c["name"]: c.get("evidence") or {} for c in mine}))
    return alerts


def gate_refused(pipeline: str, result: dict[str, Any] | None, line: str, run: str) -> Alert:
    """A refused candidate: the gate's verdict line and its failed checks."""
    failed = [c for c in (result or {}).get("checks") or [] if not c.get("passed")]
    return Alert(pipeline, "gate_refused", f"ctloop {pipeline}: evaluation gate refused the candidate",
                 [f"train run {run}: {line}"], {"run_id": (result or {}).get("run_id"), "failed_checks": failed})


def rollback(pipeline: str, result: dict[str, Any], line: str, run: str) -> Alert | None:
    """A deploy that rolled back (or breached with nothing to roll back to); None for any other outcome."""
    if result.get("outcome") not in ("rolled_back", "breached"):
        return None
    return Alert(pipeline, "rollback", f"ctloop {pipeline}: deploy of v{result.get('version')} {result['outcome']}",
                 [f"train run {run}: {line}"], {k: result.get(k) for k in ("version", "outcome", "reason",
                                                                          "live_slot", "champion")})


def task_failed(pipeline: str) -> Alert:
    """A failed task; Airflow's templates fill in which (the notifier renders them with the task's context)."""
    return Alert(pipeline, "task_failed", f"ctloop {pipeline}: task {{{{ ti.task_id }}}} failed in "
                                          "{{ ti.dag_id }}",
                 ["run {{ run_id }}, try {{ ti.try_number }}: {{ exception }}", "log: {{ ti.log_url }}"])
