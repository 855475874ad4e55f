"""The retrain policy (cooldown, merge window, one at a time, daily budget) and its ledger, without Airflow."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ctloop.cli import main
from ctloop.config.spec import RetrainSpec
from ctloop.lake.hours import parse_time
from ctloop.lake.paths import ledger_prefix
from ctloop.lake.store import Lake, LocalLake
from ctloop.retrain.ledger import Ledger, record_decisions, record_finish
from ctloop.retrain.policy import Policy, RetrainRequest, decide, outcome, request_message, requests_from_run

ROOT = Path(__file__).resolve().parents[2]

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
    late = decide(POLICY, history, req(24 * 60 + 24 * 60 + 1), run_id="r9", now=T0 + timedelta(days=2, minutes=1))
    assert late.outcome == "accepted"


def test_daily_budget_is_per_utc_day(ledger: Ledger) -> None:
    policy = Policy.from_spec(RetrainSpec(cooldown="1h", daily_budget=2, merge_window="15m"))
    history: list[dict] = []
    for minutes in (0, 120, 240):
        d = decide(policy, history, req(minutes), run_id=f"r{minutes}", now=T0 + timedelta(minutes=minutes))
        history += [d.to_dict(), {"kind": "finished", "run_id": f"r{minutes}"}]
    assert [h["outcome"] for h in history if h["kind"] == "decision"] == ["accepted", "accepted", "refused"]
    assert "daily budget spent: 2 of 2" in history[-2]["why"]
    next_day = decide(policy, history, req(23 * 60 + 1), run_id="r-next", now=T0 + timedelta(minutes=23 * 60 + 1))
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
    assert outcome({"refused": "training on 2026-01-01 to 2026-02-01 refused: landed data blocked"}) == \
        "training on 2026-01-01 to 2026-02-01 refused: landed data blocked"


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
    # the time Airflow's server gave the event decides; the producer's claimed time is only kept
    assert asset[1]["requested_at"] == "2026-03-02T11:00:00+00:00"
    assert asset[1]["client_requested_at"] == "2026-03-02T10:59:00+00:00"
    assert all(RetrainRequest.from_dict(r, pipeline="fraud") for r in asset)


@pytest.mark.parametrize(("evidence", "why"), [
    ("drift!", "evidence: expected an object"),
    ({"checks": ["drift"]}, "evidence.checks: expected a list of objects"),
    ({"checks": [], "slices": [{"field": "channel", "equals": "online"}]}, "evidence.slices[0]: not a slice"),
])
def test_malformed_evidence_is_left_out_and_the_request_stands(evidence: object, why: str) -> None:
    """Any REST client can send evidence: of the wrong shape it reaches neither the note's links nor the gate's
    slices, the request still counts, and the note says what was left out."""
    from ctloop.retrain.policy import evidence_lines, extra_slices

    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    [request] = requests_from_run("fraud", run_type="manual", run_after=at, triggered_by="ops", events=[],
                                  conf={"reason": "drift seen by hand", "evidence": evidence})
    assert request["reason"] == "drift seen by hand" and "evidence" not in request
    assert request["evidence_refused"].startswith(why)
    assert extra_slices([request]) == []
    assert evidence_lines([request]) == [f"evidence from ops left out: {request['evidence_refused']}"]
    assert RetrainRequest.from_dict(request, pipeline="fraud").evidence is None


def test_a_check_of_the_wrong_shape_is_a_clear_error() -> None:
    from ctloop.orchestration.notes import reasons_from_checks

    with pytest.raises(ValueError, match=r"checks\[1\]: expected an object with a string name"):
        reasons_from_checks({"checks": [{"name": "drift", "passed": False}, "quality failed"]})
    with pytest.raises(ValueError, match=r"checks\[0\].evidence: expected an object"):
        reasons_from_checks({"checks": [{"name": "drift", "passed": False, "evidence": "big"}]})


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


# -- server-side time ----------------------------------------------------------------------------------
def test_a_request_dated_2099_neither_blocks_retraining_nor_becomes_the_last_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A REST request once claimed 2099-01-01; its run was accepted and every later request was refused
    with "cooldown: last accepted run A at 2099-01-01T00:00:00+00:00". A time after the run's is a claim."""
    monkeypatch.setenv("CTLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CTLOOP_PIPELINES_DIR", str(ROOT / "pipelines"))

    def ctloop(*args: str) -> dict:
        assert main(["retrain", *args, "--pipeline", "fraud"]) == 0
        return json.loads(capsys.readouterr().out)

    claimed = [{"reason": "from the future", "requested_by": "client", "requested_at": "2099-01-01T00:00:00Z"}]
    first = ctloop("decide", "--run-id", "A", "--now", "2026-12-01T00:00:00Z", "--requests", json.dumps(claimed))
    [decision] = first["decisions"]
    assert first["accepted"]
    assert decision["request"]["requested_at"] == "2026-12-01T00:00:00+00:00"
    assert decision["request"]["client_requested_at"] == "2099-01-01T00:00:00+00:00"  # kept, as data
    assert ctloop("finish", "--run-id", "A", "--now", "2026-12-01T00:00:00Z", "--results", "{}")["recorded"]

    real = [{"reason": "labels arrived", "requested_by": "oncall", "requested_at": "2026-12-02T00:00:00Z"}]
    second = ctloop("decide", "--run-id", "B", "--now", "2026-12-02T00:00:00Z", "--requests", json.dumps(real))
    assert second["accepted"], second["note"]
    assert [r["run_id"] for r in ctloop("ledger") if r.get("outcome") == "accepted"] == ["A", "B"]


def test_client_times_are_kept_but_the_servers_decide(ledger: Ledger) -> None:
    """A backdated REST conf or Kafka message must not dodge the cooldown: the run's start and the asset
    event's timestamp (both set by Airflow's server) date the requests."""
    run(ledger, 0, "r1")  # accepted and finished at T0; the cooldown runs until T0 + 6h
    started = T0 + timedelta(hours=2)
    backdated = "2026-03-01T12:00:00+00:00"  # a day before: more than a cooldown before the last accepted run
    rest = requests_from_run("fraud", run_type="manual", run_after=parse_time(backdated), triggered_by="client",
                             conf={"reason": "trust me", "requested_at": backdated}, events=[], started_at=started)
    kafka = requests_from_run("fraud", run_type="asset_triggered", run_after=started, conf=None, triggered_by=None,
                              started_at=started, events=[{
                                  "uri": "ctloop://fraud/retrain-requests", "timestamp": started.isoformat(),
                                  "extra": {"from_trigger": True, "payload": {"reason": "trust me too",
                                                                              "requested_at": backdated}}}])
    for i, claimed in enumerate((rest, kafka)):
        assert claimed[0]["requested_at"] == started.isoformat() and claimed[0]["client_requested_at"] == backdated
        result = record_decisions(ledger, POLICY, [RetrainRequest.from_dict(r, pipeline="fraud") for r in claimed],
                                  run_id=f"client{i}", now=started)
        assert not result["accepted"] and "cooldown" in result["note"], result["note"]
        assert result["decisions"][0]["request"]["client_requested_at"] == backdated


def test_a_ledger_from_before_the_chain_is_indexed_once_with_future_times_clamped(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    prefix = ledger_prefix("fraud")
    future = {"kind": "decision", "pipeline": "fraud", "run_id": "A", "outcome": "accepted", "why": "api: x",
              "merged_into": None, "decided_at": "2026-12-01T00:00:00+00:00",
              "request": {"pipeline": "fraud", "reason": "x", "requested_by": "c", "source": "api",
                          "requested_at": "2099-01-01T00:00:00+00:00"}}
    lake.write(f"{prefix}/20261201T000000-decision-0a0a0a0a.json", json.dumps(future).encode())
    lake.write(f"{prefix}/20261201T000000-finished-0b0b0b0b.json",
               json.dumps({"kind": "finished", "pipeline": "fraud", "run_id": "A", "outcome": "x"}).encode())
    ledger = Ledger(lake, "fraud")
    busy = record_decisions(ledger, POLICY, [RetrainRequest("fraud", "y", "t", parse_time("2026-12-01T02:00"))],
                            run_id="B", now=parse_time("2026-12-01T02:00"))
    assert "cooldown: last accepted run A at 2026-12-01T00:00:00+00:00" in busy["note"]
    later = record_decisions(ledger, POLICY, [RetrainRequest("fraud", "z", "t", parse_time("2026-12-02"))],
                             run_id="C", now=parse_time("2026-12-02"))
    assert later["accepted"]
    assert [r["run_id"] for r in ledger.records() if r.get("kind") == "decision"] == ["A", "B", "C"]


# -- decided once ----------------------------------------------------------------------------------------
def test_an_acceptance_whose_decider_stopped_before_recording_the_run_is_replayed(ledger: Ledger) -> None:
    """The number in the accepted chain is the commit: a retried task finds its own run there."""
    from ctloop.retrain.policy import accepted_after, decide_run

    [made] = decide_run(POLICY, None, [req(0)], run_id="r1", now=T0)
    assert ledger.take(None, None, accepted_after(None, "r1", T0), [made.to_dict()], T0)  # then the task died
    again = record_decisions(ledger, POLICY, [req(1)], run_id="r1", now=T0 + timedelta(minutes=1))
    assert again["accepted"] and again["replayed"] and again["decisions"] == [made.to_dict()]
    assert record_finish(ledger, pipeline="fraud", run_id="r1", results={}, now=T0)["recorded"]
    assert [r["kind"] for r in ledger.records()] == ["decision", "finished"]


def test_history_appended_by_hand_is_indexed(ledger: Ledger) -> None:
    """How the DAG tests seed a recent run (tests.conftest.seed_recent_accepted_run): the policy must see it."""
    from tests.conftest import seed_recent_accepted_run

    seed_recent_accepted_run(ledger)
    now = datetime.now(UTC)  # what the helper counts back from: the one clock in this file
    refused = record_decisions(ledger, POLICY, [RetrainRequest("fraud", "x", "t", now)], run_id="m", now=now)
    assert "cooldown: last accepted run earlier" in refused["note"]
    assert [r["kind"] for r in ledger.records()] == ["decision", "finished", "decision"]


def test_local_create_never_overwrites(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    assert lake.create("_state/x/1.json", b"first") is True
    assert lake.create("_state/x/1.json", b"second") is False
    assert lake.read("_state/x/1.json") == b"first"
    assert sorted(p.name for p in (tmp_path / "lake" / "_state" / "x").iterdir()) == ["1.json"]  # no temp file left


# -- the cost of a decision ------------------------------------------------------------------------------
class CountingLake(Lake):
    """A lake in memory that counts its calls: what a decision costs, in objects touched, not seconds."""

    uri = "memory://"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: Counter[str] = Counter()

    def write(self, path: str, data: bytes) -> None:
        self.calls["write"] += 1
        self.objects[path] = data

    def create(self, path: str, data: bytes) -> bool:
        self.calls["create"] += 1
        return self.objects.setdefault(path, data) is data

    def read(self, path: str) -> bytes:
        self.calls["read"] += 1
        if path not in self.objects:
            raise FileNotFoundError(path)
        return self.objects[path]

    def exists(self, path: str) -> bool:
        self.calls["exists"] += 1
        return path in self.objects

    def delete(self, path: str) -> None:
        self.calls["delete"] += 1
        self.objects.pop(path, None)

    def list(self, prefix: str) -> list[str]:
        self.calls["list"] += 1
        return sorted(p for p in self.objects if p.startswith(f"{prefix}/"))

    def arrow_fs(self):  # noqa: ANN201
        raise NotImplementedError


def test_a_decision_costs_the_same_with_10_or_1000_records_in_the_ledger() -> None:
    lake = CountingLake()
    ledger = Ledger(lake, "fraud")
    depth = ledger_prefix("fraud").count("/") + 1
    cycles = iter(range(10_000))

    def cycle() -> Counter[str]:
        """One accepted run that finishes, then a request its cooldown refuses; what it cost."""
        before = lake.calls.copy()
        k = next(cycles)
        at = T0 + timedelta(hours=12 * k)  # two accepted runs a day: the budget
        assert record_decisions(ledger, POLICY, [RetrainRequest("fraud", "drift", "t", at)], run_id=f"a{k}",
                                now=at)["accepted"]
        assert record_finish(ledger, pipeline="fraud", run_id=f"a{k}", results={}, now=at)["recorded"]
        refused = record_decisions(ledger, POLICY, [RetrainRequest("fraud", "drift", "t", at + timedelta(hours=1))],
                                   run_id=f"r{k}", now=at + timedelta(hours=1))
        assert "cooldown" in refused["note"]
        return lake.calls - before

    def records() -> int:
        return sum(p.count("/") == depth for p in lake.objects)

    cycle()  # the first use indexes the (empty) ledger: a one-off listing
    while records() < 10:
        small = cycle()
    while records() < 1000:
        large = cycle()
    assert small == large, (small, large)
    assert "list" not in large and large["read"] + large["exists"] <= 20
