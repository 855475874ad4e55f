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

Times are the server's, never a client's and never the clock's. A request's ``requested_at`` is a
time Airflow assigned: the run's start for a scheduled, manual or REST run (a REST client may set a
run's ``run_after`` and ``conf``, not its start), the asset event's ``timestamp`` for a features update,
a Kafka message or a monitor request. A decision's ``now`` is the run's start too, and a request time
later than ``now`` counts as ``now``. What a client claims (a conf's ``requested_at``, a Kafka
producer's timestamp, an event's extra) is kept as ``client_requested_at``, as data only: a request
dated 2099 once blocked retraining until 2099, and a backdated one could dodge the cooldown. Not
reading the clock keeps a decision replayable.

The rules need only the last accepted run (``LastAccepted``: its id, its time, how many runs its UTC
day accepted, whether it finished), never the whole history: an accepted request is at least
``cooldown`` after the last one, so the last accepted is also the latest and a day's count carries
forward. The ledger keeps that state compacted (``ctloop.retrain.ledger``), where every decision is
recorded; ``decide`` still takes a plain list of ledger records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from ctloop.config.spec import RetrainSpec, duration_seconds
from ctloop.lake.hours import parse_time
from ctloop.orchestration.notes import asks_retrain

Outcome = Literal["accepted", "refused", "merged"]
SOURCES = ("schedule", "features", "api", "manual", "kafka", "monitor")


@dataclass(frozen=True)
class RetrainRequest:
    """One reason to retrain: who asked, why and when (a time the server assigned; what the client claimed
    is ``client_requested_at``, kept but never decided on)."""

    pipeline: str
    reason: str
    requested_by: str
    requested_at: datetime
    source: str = "api"
    client_requested_at: datetime | None = None
    # why, in figures: the failed monitoring checks ``{"checks": [{name, detail, evidence}], "slices": [...]}``
    evidence: dict[str, Any] | None = None

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
        claimed = data.get("client_requested_at")
        return cls(pipeline=name, reason=str(data["reason"])[:500], requested_by=str(data.get("requested_by") or "?"),
                   requested_at=parse_time(data["requested_at"]), source=source,
                   client_requested_at=parse_time(claimed) if claimed else None,
                   evidence=data.get("evidence") if isinstance(data.get("evidence"), dict) else None)

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "requested_at": self.requested_at.isoformat()}
        if self.evidence is None:
            del data["evidence"]
        if self.client_requested_at is None:
            del data["client_requested_at"]
        else:
            data["client_requested_at"] = self.client_requested_at.isoformat()
        return data

    def no_later_than(self, now: datetime) -> RetrainRequest:
        """The request as the policy sees it at ``now``: a time after ``now`` is a claim, kept, never used."""
        if self.requested_at <= now:
            return self
        return replace(self, requested_at=now, client_requested_at=self.client_requested_at or self.requested_at)


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


@dataclass(frozen=True)
class LastAccepted:
    """All the rules need to know of the past: the last accepted run."""

    run_id: str
    at: datetime  # its request's time, as the policy saw it
    day_count: int  # accepted runs on at's UTC day, this one included
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        """What the ledger's accepted chain carries (whether it finished is a marker of its own)."""
        return {"run_id": self.run_id, "at": self.at.isoformat(), "day_count": self.day_count}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, finished: bool) -> LastAccepted:
        return cls(data["run_id"], parse_time(data["at"]), int(data["day_count"]), finished)


def accepted_after(last: LastAccepted | None, run_id: str, at: datetime) -> LastAccepted:
    """The last accepted run once ``run_id`` is accepted at ``at``."""
    same_day = last is not None and last.at.date() == at.date()
    return LastAccepted(run_id, at, last.day_count + 1 if last is not None and same_day else 1)


def accepted_at(record: dict[str, Any]) -> datetime:
    """A decision record's request time as the policy sees it (older records kept a client's future time)."""
    at = parse_time(record["request"]["requested_at"])
    return min(at, parse_time(record["decided_at"])) if record.get("decided_at") else at


def last_accepted(history: list[dict[str, Any]]) -> LastAccepted | None:
    """The last accepted run in a list of ledger records (decisions and finishes)."""
    accepted = sorted((r for r in history if r.get("kind") == "decision" and r.get("outcome") == "accepted"),
                      key=accepted_at)
    if not accepted:
        return None
    last, at = accepted[-1], accepted_at(accepted[-1])
    finished = any(r.get("kind") == "finished" and r.get("run_id") == last["run_id"] for r in history)
    return LastAccepted(last["run_id"], at, sum(accepted_at(r).date() == at.date() for r in accepted), finished)


def decide_one(policy: Policy, last: LastAccepted | None, request: RetrainRequest, *, run_id: str,
               now: datetime) -> Decision:
    """The decision on one request, given the last accepted run (None: nothing accepted yet)."""
    now = parse_time(now)
    request = request.no_later_than(now)
    at = request.requested_at

    def verdict(outcome: Outcome, why: str, merged_into: str | None = None) -> Decision:
        return Decision(request, outcome, why, run_id, now, merged_into)

    if last is not None:
        if abs(at - last.at) < policy.merge_window:
            return verdict("merged", f"duplicate: within merge_window ({_fmt(policy.merge_window)}) of the request "
                                     f"accepted for run {last.run_id} at {last.at.isoformat()}",
                           merged_into=last.run_id)
        if not last.finished and at - last.at < policy.stale_after:
            return verdict("refused", f"busy: run {last.run_id} (accepted at {last.at.isoformat()}) has not "
                                      "finished; one training run per pipeline at a time")
        if at - last.at < policy.cooldown:
            return verdict("refused", f"cooldown: last accepted run {last.run_id} at {last.at.isoformat()}; "
                                      f"next allowed at {(last.at + policy.cooldown).isoformat()}")
    # past the cooldown, at is on or after the last accepted run's day: only that day can have spent any budget
    day = at.date()
    spent = last.day_count if last is not None and last.at.date() == day else 0
    if spent >= policy.daily_budget:
        return verdict("refused", f"daily budget spent: {spent} of {policy.daily_budget} accepted runs on "
                                  f"{day.isoformat()} (UTC); resets at midnight UTC")
    return verdict("accepted", f"{request.source}: {request.reason}")


def decide(policy: Policy, history: list[dict[str, Any]], request: RetrainRequest, *, run_id: str,
           now: datetime) -> Decision:
    """The decision on one request, given earlier ledger records (decisions and finishes)."""
    return decide_one(policy, last_accepted(history), request, run_id=run_id, now=now)


def decide_run(policy: Policy, last: LastAccepted | None, requests: list[RetrainRequest], *, run_id: str,
               now: datetime) -> list[Decision]:
    """Decide a run's requests in time order; at most one is accepted, the rest merge into it or are refused."""
    now = parse_time(now)
    decisions: list[Decision] = []
    for request in sorted((r.no_later_than(now) for r in requests), key=lambda r: r.requested_at):
        decision = decide_one(policy, last, request, run_id=run_id, now=now)
        decisions.append(decision)
        if decision.accepted:
            last = accepted_after(last, run_id, decision.request.requested_at)
    return decisions


def summary(decisions: list[dict[str, Any]]) -> str:
    """One line for the DAG run's note, from a run's decision records."""
    accepted = [d for d in decisions if d["outcome"] == "accepted"]
    if accepted:
        extra = len(decisions) - 1
        return f"retrain accepted — {accepted[0]['why']}" + (f" (+{extra} request(s) merged)" if extra else "")
    if not decisions:
        return "retrain not started — no request"
    return "retrain not started — " + "; ".join(f"{d['request']['source']}: {d['why']}" for d in decisions)


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
    if results.get("refused"):  # the training-set step refused landed data blocked by a failed quality suite
        return results["refused"]
    return "failed before registration (see the task logs)"


def signals(decisions: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The requests run ``run_id`` answered (accepted, or merged into it): who asked, why, and the names of
    the checks in their evidence: the ledger's link from a signal to the training run."""
    return [{"requested_by": d["request"].get("requested_by"), "source": d["request"].get("source"),
             "reason": d["request"].get("reason"),
             "checks": [c.get("name") for c in (d["request"].get("evidence") or {}).get("checks") or []]}
            for d in decisions if d.get("outcome") == "accepted" or d.get("merged_into") == run_id]


def requests_from_run(pipeline: str, *, run_type: str, run_after: datetime, conf: dict[str, Any] | None,
                      triggered_by: str | None, events: list[dict[str, Any]],
                      started_at: datetime | None = None) -> list[dict[str, Any]]:
    """The retrain requests one train DAG run carries (Airflow-side, so plain values in and out).

    ``events`` are the triggering asset events as ``{"uri", "extra", "timestamp"}``: features
    updates and retrain requests (from Kafka or the monitor DAG). A manual or REST-triggered run
    carries its ``conf["reason"]``; a scheduled run, the schedule.

    Times are the server's: a run's own request is dated when the run started (``started_at``; its
    ``run_after`` when not given): a scheduled run's cron tick can be hours old when catchup is off or
    the DAG was just unpaused, and a REST client may set ``run_after``. An event's request is dated by
    the event's ``timestamp``, which Airflow's server sets. A time the client sent (the conf's or the
    event extra's ``requested_at``, for Kafka the producer's message time) is only ``client_requested_at``.
    """
    at = parse_time(started_at or run_after).isoformat()
    run_type = str(getattr(run_type, "value", run_type))  # Airflow passes its DagRunType enum
    conf = conf or {}
    requests: list[dict[str, Any]] = []
    if run_type == "scheduled":
        requests.append({"reason": "scheduled retrain", "requested_by": "schedule", "requested_at": at,
                         "source": "schedule"})
    elif run_type == "manual":
        requests.append({"reason": conf.get("reason") or "manual trigger (no reason given)",
                         "requested_by": conf.get("requested_by") or triggered_by or "api",
                         "requested_at": at, "source": "api", **_claimed(conf.get("requested_at")),
                         **_evidence(conf)})
    for event in events:
        extra = event.get("extra") or {}
        payload = extra.get("payload") if isinstance(extra.get("payload"), dict) else extra
        when, claimed = event.get("timestamp") or at, _claimed(payload.get("requested_at"))
        if str(event.get("uri", "")).endswith("/features"):
            interval = payload.get("interval")
            requests.append({"reason": f"new features {interval[0]} .. {interval[1]}" if interval else "new features",
                             "requested_by": "features", "requested_at": when, "source": "features", **claimed})
        else:
            source = payload.get("source") or ("kafka" if extra.get("from_trigger") else "monitor")
            requests.append({"reason": payload.get("reason") or "retrain requested",
                             "requested_by": payload.get("requested_by") or source, "requested_at": when,
                             "source": source if source in SOURCES else "api", **claimed, **_evidence(payload)})
    if not requests:  # any other kind of run (a backfill, a test) still asks for something
        requests.append({"reason": conf.get("reason") or f"{run_type} run", "requested_by": triggered_by or run_type,
                         "requested_at": at, "source": "api"})
    for r in requests:
        r["pipeline"] = pipeline
        r["requested_at"] = parse_time(r["requested_at"]).isoformat()
    return requests


def _evidence(payload: dict[str, Any]) -> dict[str, Any]:
    """A request's evidence (the monitor DAG's failed checks), when it carries one. Evidence of the wrong shape
    (any client can send a conf or an asset event) is left out and the request says why: the request itself
    stands, and nothing malformed reaches the note or the gate."""
    from ctloop.config.spec import SliceSpec

    evidence = payload.get("evidence")
    if evidence is None or evidence == {}:
        return {}
    problem = None
    if not isinstance(evidence, dict):
        problem = f"evidence: expected an object, got {type(evidence).__name__}"
    else:
        checks, slices = evidence.get("checks") or [], evidence.get("slices") or []
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            problem = "evidence.checks: expected a list of objects"
        elif not isinstance(slices, list):
            problem = "evidence.slices: expected a list of slices"
        else:
            for i, cut in enumerate(slices):
                try:
                    SliceSpec.model_validate(cut)
                except ValueError as exc:
                    problem = f"evidence.slices[{i}]: not a slice ({exc.__class__.__name__}: {str(exc)[:200]})"
                    break
    return {"evidence_refused": problem} if problem else {"evidence": evidence}


def evidence_from_checks(result: dict[str, Any] | None) -> dict[str, Any]:
    """The evidence a monitoring result's failed checks give a retrain request: each check (name, detail,
    evidence) and the slices they name (``evidence.slices``), which the new model's gate also checks."""
    failed = [c for c in (result or {}).get("checks") or [] if not c.get("passed", False) and asks_retrain(c)]
    slices: dict[str, dict[str, Any]] = {}
    for check in failed:
        for cut in (check.get("evidence") or {}).get("slices") or []:
            if isinstance(cut, dict) and cut.get("name"):
                slices.setdefault(cut["name"], cut)
    return {"checks": [{k: c.get(k) for k in ("name", "detail", "evidence")} for c in failed],
            "slices": list(slices.values())}


def extra_slices(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The slices a run's requests' evidence names (first definition of a name wins): the gate's extra slices."""
    found: dict[str, dict[str, Any]] = {}
    for request in requests:
        for cut in (request.get("evidence") or {}).get("slices") or []:
            found.setdefault(cut["name"], cut)
    return list(found.values())


def evidence_lines(requests: list[dict[str, Any]]) -> list[str]:
    """The run note's account of why: each failed check behind a request, with its report links."""
    lines = []
    for request in requests:
        if request.get("evidence_refused"):
            lines.append(f"evidence from {request.get('requested_by', '?')} left out: {request['evidence_refused']}")
        for check in (request.get("evidence") or {}).get("checks") or []:
            links = [v for k, v in (check.get("evidence") or {}).items()
                     if isinstance(v, str) and (k.endswith("report") or k.endswith("url") or k.endswith("docs"))]
            lines.append(f"evidence from {request.get('requested_by', '?')}: {check.get('name')}: "
                         f"{check.get('detail')}" + (f" ({', '.join(links)})" if links else ""))
    slices = extra_slices(requests)
    if slices:
        lines.append("the gate also checks the slices the evidence names: " + ", ".join(c["name"] for c in slices))
    return lines


def _claimed(value: Any) -> dict[str, str]:
    """A client's claimed request time as ``client_requested_at`` (dropped when it is not a time at all)."""
    try:
        return {"client_requested_at": parse_time(value).isoformat()} if value else {}
    except (TypeError, ValueError, AttributeError):
        return {}


def request_message(pipeline: str, reason: str, requested_by: str) -> bytes:
    """A retrain request as sent to the Kafka topic (CTLOOP_RETRAIN_TOPIC); its time is the message's."""
    if not reason.strip():
        raise ValueError("a retrain request needs a reason")
    return json.dumps({"pipeline": pipeline, "reason": reason, "requested_by": requested_by}).encode()


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m"
