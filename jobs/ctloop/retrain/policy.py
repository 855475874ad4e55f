"""Retrain policy: which retrain requests start a training run, and a durable ledger of every decision.

Requests come from the schedule, new features, the monitor DAG, a Kafka topic and Airflow's REST API;
all of them end up as runs of the ``<pipeline>_train`` DAG, whose first job (``ctloop retrain decide``)
applies the pipeline spec's ``retrain`` section:

* **merge**: a request within ``merge_window`` of the last accepted one is a duplicate; it is merged
  into that run (its reason is recorded against it), not trained again;
* **one at a time**: while an accepted run has not finished, other requests are refused (an
  accepted run that never reported back is considered abandoned after ``stale_after``);
* **cooldown**: no accepted run within ``cooldown`` of the last accepted one;
* **daily budget**: at most ``daily_budget`` accepted runs per pipeline per UTC day.

Time comes from the requests themselves (their ``requested_at``) and the run (``now``), never from
the clock, so a decision replays identically.

Every decision is recorded in the ledger (``ctloop.retrain.ledger``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ctloop.config.spec import RetrainSpec, duration_seconds
from ctloop.lake.hours import parse_time

Outcome = Literal["accepted", "refused", "merged"]
SOURCES = ("schedule", "features", "api", "manual", "kafka", "monitor")


@dataclass(frozen=True)
class RetrainRequest:
    """One reason to retrain: who asked, why and when (the request's own time, not the clock's)."""

    pipeline: str
    reason: str
    requested_by: str
    requested_at: datetime
    source: str = "api"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, pipeline: str | None = None) -> RetrainRequest:
        missing = [k for k in ("reason", "requested_at") if not data.get(k)]
        if missing:
            raise ValueError(f"retrain request {data!r}: missing {', '.join(missing)}")
        name = data.get("pipeline") or pipeline
        if not name or (pipeline and name != pipeline):
            raise ValueError(f"retrain request {data!r}: pipeline must be {pipeline!r}")
        source = str(data.get("source") or "api")
        if source not in SOURCES:
            raise ValueError(f"retrain request {data!r}: source must be one of {', '.join(SOURCES)}")
        return cls(pipeline=name, reason=str(data["reason"])[:500], requested_by=str(data.get("requested_by") or "?"),
                   requested_at=parse_time(data["requested_at"]), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requested_at": self.requested_at.isoformat()}


@dataclass(frozen=True)
class Policy:
    cooldown: timedelta
    daily_budget: int
    merge_window: timedelta
    stale_after: timedelta = timedelta(hours=24)

    @classmethod
    def from_spec(cls, spec: RetrainSpec, stale_after: timedelta = timedelta(hours=24)) -> Policy:
        return cls(cooldown=timedelta(seconds=duration_seconds(spec.cooldown)), daily_budget=spec.daily_budget,
                   merge_window=timedelta(seconds=duration_seconds(spec.merge_window)), stale_after=stale_after)


@dataclass(frozen=True)
class Decision:
    request: RetrainRequest
    outcome: Outcome
    why: str
    run_id: str
    decided_at: datetime
    merged_into: str | None = None
    kind: str = field(default="decision", init=False)

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pipeline": self.request.pipeline, "run_id": self.run_id, "outcome": self.outcome,
                "why": self.why, "merged_into": self.merged_into, "decided_at": self.decided_at.isoformat(),
                "request": self.request.to_dict()}


def _accepted(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in history if r.get("kind") == "decision" and r["outcome"] == "accepted"]


def decide(policy: Policy, history: list[dict[str, Any]], request: RetrainRequest, *, run_id: str,
           now: datetime) -> Decision:
    """The decision on one request, given every earlier ledger record (decisions and finishes)."""
    at = request.requested_at

    def verdict(outcome: Outcome, why: str, merged_into: str | None = None) -> Decision:
        return Decision(request, outcome, why, run_id, parse_time(now), merged_into)

    accepted = sorted(_accepted(history), key=lambda r: r["request"]["requested_at"])
    if accepted:
        last = accepted[-1]
        last_at = parse_time(last["request"]["requested_at"])
        finished = {r["run_id"] for r in history if r.get("kind") == "finished"}
        pending = last["run_id"] not in finished and at - last_at < policy.stale_after
        if abs(at - last_at) < policy.merge_window:
            return verdict("merged", f"duplicate: within merge_window ({_fmt(policy.merge_window)}) of the request "
                                     f"accepted for run {last['run_id']} at {last_at.isoformat()}",
                           merged_into=last["run_id"])
        if pending:
            return verdict("refused", f"busy: run {last['run_id']} (accepted at {last_at.isoformat()}) has not "
                                      "finished; one training run per pipeline at a time")
        if at - last_at < policy.cooldown:
            return verdict("refused", f"cooldown: last accepted run {last['run_id']} at {last_at.isoformat()}; "
                                      f"next allowed at {(last_at + policy.cooldown).isoformat()}")
    day = at.date()
    today = [r for r in accepted if parse_time(r["request"]["requested_at"]).date() == day]
    if len(today) >= policy.daily_budget:
        return verdict("refused", f"daily budget spent: {len(today)} of {policy.daily_budget} accepted runs on "
                                  f"{day.isoformat()} (UTC); resets at midnight UTC")
    return verdict("accepted", f"{request.source}: {request.reason}")


def decide_run(policy: Policy, history: list[dict[str, Any]], requests: list[RetrainRequest], *, run_id: str,
               now: datetime) -> list[Decision]:
    """Decide a run's requests in time order; at most one is accepted, the rest merge into it or are refused."""
    decisions: list[Decision] = []
    records = list(history)
    for request in sorted(requests, key=lambda r: r.requested_at):
        decision = decide(policy, records, request, run_id=run_id, now=now)
        decisions.append(decision)
        records.append(decision.to_dict())
    return decisions


def summary(decisions: list[Decision]) -> str:
    """One line for the DAG run's note."""
    accepted = [d for d in decisions if d.accepted]
    if accepted:
        d = accepted[0]
        extra = len(decisions) - 1
        return f"retrain accepted — {d.why}" + (f" (+{extra} request(s) merged)" if extra else "")
    if not decisions:
        return "retrain not started — no request"
    return "retrain not started — " + "; ".join(f"{d.request.source}: {d.why}" for d in decisions)


def outcome(results: dict[str, Any]) -> str:
    """How an accepted run ended, from its jobs' JSON results (None where a job did not run)."""
    registered = results.get("registered")
    if registered:
        return f"registered {registered.get('model')} version {registered.get('version')} as " \
               f"{registered.get('alias', 'challenger')}"
    evaluation = results.get("evaluation")
    if evaluation and not evaluation.get("passed"):
        return "gate refused: " + "; ".join(evaluation.get("reasons") or ["no reason given"])
    quality = results.get("quality")
    if quality and not quality.get("passed"):
        return "quality refused: " + "; ".join(quality.get("reasons") or ["no reason given"])
    return "failed before registration (see the task logs)"


def requests_from_run(pipeline: str, *, run_type: str, run_after: datetime, conf: dict[str, Any] | None,
                      triggered_by: str | None, events: list[dict[str, Any]],
                      started_at: datetime | None = None) -> list[dict[str, Any]]:
    """The retrain requests one train DAG run carries (Airflow-side, so plain values in and out).

    ``events`` are the triggering asset events as ``{"uri", "extra", "timestamp"}``: features
    updates and retrain requests (from Kafka or the monitor DAG). A manual or REST-triggered run
    carries its ``conf["reason"]``; a scheduled run, the schedule, asking when the run started
    (``started_at``): its cron tick can be hours old when catchup is off or the DAG was just unpaused.
    """
    at = parse_time(run_after).isoformat()
    run_type = str(getattr(run_type, "value", run_type))  # Airflow passes its DagRunType enum
    conf = conf or {}
    requests: list[dict[str, Any]] = []
    if run_type == "scheduled":
        asked = parse_time(started_at).isoformat() if started_at else at
        requests.append({"reason": "scheduled retrain", "requested_by": "schedule", "requested_at": asked,
                         "source": "schedule"})
    elif run_type == "manual":
        requests.append({"reason": conf.get("reason") or "manual trigger (no reason given)",
                         "requested_by": conf.get("requested_by") or triggered_by or "api",
                         "requested_at": conf.get("requested_at") or at, "source": "api"})
    for event in events:
        extra = event.get("extra") or {}
        payload = extra.get("payload") if isinstance(extra.get("payload"), dict) else extra
        when = payload.get("requested_at") or event.get("timestamp") or at
        if str(event.get("uri", "")).endswith("/features"):
            interval = payload.get("interval")
            requests.append({"reason": f"new features {interval[0]} .. {interval[1]}" if interval else "new features",
                             "requested_by": "features", "requested_at": when, "source": "features"})
        else:
            source = payload.get("source") or ("kafka" if extra.get("from_trigger") else "monitor")
            requests.append({"reason": payload.get("reason") or "retrain requested",
                             "requested_by": payload.get("requested_by") or source, "requested_at": when,
                             "source": source if source in SOURCES else "api"})
    if not requests:  # any other kind of run (a backfill, a test) still asks for something
        requests.append({"reason": conf.get("reason") or f"{run_type} run", "requested_by": triggered_by or run_type,
                         "requested_at": at, "source": "api"})
    for r in requests:
        r["pipeline"] = pipeline
        r["requested_at"] = parse_time(r["requested_at"]).isoformat()
    return requests


def request_message(pipeline: str, reason: str, requested_by: str) -> bytes:
    """A retrain request as sent to the Kafka topic (CTLOOP_RETRAIN_TOPIC); its time is the message's."""
    if not reason.strip():
        raise ValueError("a retrain request needs a reason")
    return json.dumps({"pipeline": pipeline, "reason": reason, "requested_by": requested_by}).encode()


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m"
