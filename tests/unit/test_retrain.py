"""The retrain policy (cooldown, merge window, one at a time, daily budget) and its ledger, without Airflow."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ctloop.config.spec import RetrainSpec
from ctloop.lake.hours import parse_time
from ctloop.lake.store import LocalLake
from ctloop.retrain.ledger import Ledger, record_decisions, record_finish
from ctloop.retrain.policy import Policy, RetrainRequest, decide, outcome, request_message, requests_from_run

POLICY = Policy.from_spec(RetrainSpec(cooldown="6h", daily_budget=2, merge_window="1h"))
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def req(minutes: float, reason: str = "drift", source: str = "monitor") -> RetrainRequest:
    return RetrainRequest("fraud", reason, "test", T0 + timedelta(minutes=minutes), source)


def run(ledger: Ledger, minutes: float, run_id: str, *requests: RetrainRequest, finish: bool = True) -> dict:
    now = T0 + timedelta(minutes=minutes)
    result = record_decisions(ledger, POLICY, list(requests) or [req(minutes)], run_id=run_id, now=now)
    if finish:
        record_finish(ledger, pipeline="fraud", run_id=run_id, results={}, now=now)
    return result


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(LocalLake(tmp_path / "lake"), "fraud")


def test_first_request_is_accepted_and_recorded_with_its_reason(ledger: Ledger) -> None:
    result = run(ledger, 0, "r1", req(0, "drift share 0.4 > 0.3"), finish=False)
    assert result["accepted"] and result["note"] == "retrain accepted — monitor: drift share 0.4 > 0.3"
    [record] = ledger.records()
    assert record["outcome"] == "accepted" and record["request"]["reason"] == "drift share 0.4 > 0.3"
    assert record["run_id"] == "r1" and record["decided_at"] == T0.isoformat()


def test_request_inside_the_cooldown_is_refused(ledger: Ledger) -> None:
    run(ledger, 0, "r1")
    refused = run(ledger, 90, "r2", req(90))
    assert not refused["accepted"]
    assert "cooldown" in refused["note"] and (T0 + timedelta(hours=6)).isoformat() in refused["note"]
    assert run(ledger, 6 * 60 + 1, "r3")["accepted"], "after the cooldown a request is accepted again"
    outcomes = [(r["run_id"], r["outcome"]) for r in ledger.records() if r["kind"] == "decision"]
    assert outcomes == [("r1", "accepted"), ("r2", "refused"), ("r3", "accepted")]


def test_duplicates_within_the_merge_window_merge_into_the_pending_run(ledger: Ledger) -> None:
    run(ledger, 0, "r1", finish=False)
    merged = run(ledger, 20, "r2", req(20, "same drift again"), finish=False)
    assert not merged["accepted"]
    [decision] = merged["decisions"]
    assert decision["outcome"] == "merged" and decision["merged_into"] == "r1"
    # several requests in one run: the first is accepted, the others merge into it
    record_finish(ledger, pipeline="fraud", run_id="r1", results={}, now=T0)
    one_run = record_decisions(ledger, POLICY, [req(400, "a"), req(410, "b"), req(405, "c")],
                               run_id="r3", now=T0 + timedelta(minutes=415))
    assert [(d["request"]["reason"], d["outcome"]) for d in one_run["decisions"]] == [
        ("a", "accepted"), ("c", "merged"), ("b", "merged")]
    assert one_run["note"] == "retrain accepted — monitor: a (+2 request(s) merged)"


def test_one_training_run_at_a_time(ledger: Ledger) -> None:
    run(ledger, 0, "r1", finish=False)
    busy = run(ledger, 7 * 60, "r2", req(7 * 60), finish=False)
    assert not busy["accepted"] and "busy" in busy["note"]
    record_finish(ledger, pipeline="fraud", run_id="r1", results={}, now=T0)
    assert run(ledger, 7 * 60 + 5, "r3", req(7 * 60 + 5))["accepted"]
    # a run that never reported back stops blocking after stale_after
    history = ledger.records() + [{"kind": "decision", "run_id": "lost", "outcome": "accepted",
                                   "request": req(24 * 60).to_dict()}]
    late = decide(POLICY, history, req(24 * 60 + 24 * 60 + 1), run_id="r9", now=T0)
    assert late.outcome == "accepted"


def test_daily_budget_is_per_utc_day(ledger: Ledger) -> None:
    policy = Policy.from_spec(RetrainSpec(cooldown="1h", daily_budget=2, merge_window="15m"))
    history: list[dict] = []
    for minutes in (0, 120, 240):
        d = decide(policy, history, req(minutes), run_id=f"r{minutes}", now=T0)
        history += [d.to_dict(), {"kind": "finished", "run_id": f"r{minutes}"}]
    assert [h["outcome"] for h in history if h["kind"] == "decision"] == ["accepted", "accepted", "refused"]
    assert "daily budget spent: 2 of 2" in history[-2]["why"]
    next_day = decide(policy, history, req(23 * 60 + 1), run_id="r-next", now=T0)
    assert next_day.outcome == "accepted", "the budget resets at midnight UTC"


def test_retried_decide_replays_the_recorded_decision(ledger: Ledger) -> None:
    first = run(ledger, 0, "r1", finish=False)
    again = record_decisions(ledger, POLICY, [req(0)], run_id="r1", now=T0)
    assert again["replayed"] and again["accepted"] == first["accepted"]
    assert len(ledger.records()) == 1


def test_finish_records_the_outcome_once_and_only_for_accepted_runs(ledger: Ledger) -> None:
    run(ledger, 0, "r1", finish=False)
    registered = {"registered": {"model": "ctloop-fraud", "version": "3", "alias": "challenger"}}
    done = record_finish(ledger, pipeline="fraud", run_id="r1", results=registered, now=T0)
    assert done["recorded"] and done["outcome"] == "registered ctloop-fraud version 3 as challenger"
    assert not record_finish(ledger, pipeline="fraud", run_id="r1", results={}, now=T0)["recorded"]
    assert not record_finish(ledger, pipeline="fraud", run_id="never", results={}, now=T0)["recorded"]
    assert outcome({"evaluation": {"passed": False, "reasons": ["pr_auc 0.1 < floor 0.2"]}}) == \
        "gate refused: pr_auc 0.1 < floor 0.2"
    assert outcome({"quality": {"passed": False, "reasons": ["label rate 0"]}}).startswith("quality refused")


def test_requests_from_a_run() -> None:
    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    scheduled = requests_from_run("fraud", run_type="scheduled", run_after=at, conf={}, triggered_by=None, events=[])
    assert scheduled == [{"reason": "scheduled retrain", "requested_by": "schedule", "requested_at": at.isoformat(),
                          "source": "schedule", "pipeline": "fraud"}]
    manual = requests_from_run("fraud", run_type="manual", run_after=at, conf={"reason": "new labels"},
                               triggered_by="admin", events=[])
    assert manual[0]["reason"] == "new labels" and manual[0]["requested_by"] == "admin"
    events = [
        {"uri": "ctloop://fraud/features", "extra": {"interval": ["2026-03-01T00:00:00+00:00", "x"]},
         "timestamp": "2026-03-02T10:00:00+00:00"},
        {"uri": "ctloop://fraud/retrain-requests", "timestamp": "2026-03-02T11:00:00+00:00",
         "extra": {"from_trigger": True, "payload": {"reason": "drift", "requested_by": "oncall",
                                                     "requested_at": "2026-03-02T10:59:00Z"}}},
    ]
    asset = requests_from_run("fraud", run_type="asset_triggered", run_after=at, conf=None, triggered_by=None,
                              events=events)
    assert [(r["source"], r["requested_by"]) for r in asset] == [("features", "features"), ("kafka", "oncall")]
    assert asset[1]["requested_at"] == "2026-03-02T10:59:00+00:00"
    assert all(RetrainRequest.from_dict(r, pipeline="fraud") for r in asset)


def test_a_scheduled_run_started_late_asks_when_it_starts_and_the_queued_request_merges(ledger: Ledger) -> None:
    """`make demo` on the live stack: unpausing the train DAG at 19:13 ran the midnight tick; a REST request
    queued behind it is a duplicate of that run, not a request 19 hours later."""
    tick, started = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 2, 19, 13, 5, tzinfo=UTC)
    scheduled = requests_from_run("fraud", run_type="scheduled", run_after=tick, conf={}, triggered_by=None,
                                  events=[], started_at=started)
    assert scheduled[0]["requested_at"] == started.isoformat()
    first = record_decisions(ledger, POLICY, [RetrainRequest.from_dict(scheduled[0], pipeline="fraud")],
                             run_id="s", now=started)
    assert first["accepted"]
    record_finish(ledger, pipeline="fraud", run_id="s", results={}, now=started + timedelta(minutes=15))
    manual = requests_from_run("fraud", run_type="manual", run_after=started + timedelta(seconds=5),
                               conf={"reason": "features are ready"}, triggered_by="admin", events=[])
    second = record_decisions(ledger, POLICY, [RetrainRequest.from_dict(manual[0], pipeline="fraud")],
                              run_id="m", now=started + timedelta(minutes=20))
    assert [d["outcome"] for d in second["decisions"]] == ["merged"]


def test_bad_requests_are_rejected_with_the_field() -> None:
    with pytest.raises(ValueError, match="missing reason"):
        RetrainRequest.from_dict({"requested_at": "2026-01-01T00:00:00Z"}, pipeline="fraud")
    with pytest.raises(ValueError, match="pipeline must be 'fraud'"):
        RetrainRequest.from_dict({"pipeline": "other", "reason": "x", "requested_at": "2026-01-01"}, pipeline="fraud")
    with pytest.raises(ValueError, match="needs a reason"):
        request_message("fraud", " ", "me")
    assert json.loads(request_message("fraud", "drift", "me"))["pipeline"] == "fraud"
    assert parse_time("2026-01-01T00:00:00").tzinfo is not None
