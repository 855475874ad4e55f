"""Continuous alarms, continuous requests: the policy lets through at most its budget, and the ledger says
which signal caused which training run and which model version that run produced.

The monitor DAG fails every hour for three days (the world changed and stays changed). Each failure
becomes a retrain request carrying the checks' evidence, exactly as ``request_retrain`` and the train
DAG's ``requests`` task build them (``evidence_from_checks``, ``requests_from_run``); each train run
decides against the real ledger in a lake folder and, when accepted, finishes having registered a new
version. Airflow itself is not started: the DAG tasks call these same functions.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ctloop.config.spec import RetrainSpec, load_spec
from ctloop.evaluation.evaluate import with_extra_slices
from ctloop.lake.store import LocalLake
from ctloop.retrain.ledger import Ledger, record_decisions, record_finish
from ctloop.retrain.policy import (
    Policy,
    RetrainRequest,
    evidence_from_checks,
    evidence_lines,
    extra_slices,
    requests_from_run,
)

from tests.conftest import make_pipeline

SPEC = RetrainSpec(cooldown="6h", daily_budget=3, merge_window="1h")
START = datetime(2026, 2, 1, tzinfo=UTC)
HOURS = 72
CHECKS = {"checks": [
    {"name": "drift", "passed": False, "detail": "amount drifted (PSI 0.41)",
     "evidence": {"drifted_features": ["amount"], "report": "file:///lake/_reports/drift.html",
                  "slices": [{"name": "amount_500_plus", "field": "amount", "min": 500.0}]}},
    {"name": "performance_pos", "passed": False, "detail": "realized pr_auc 0.21 vs champion holdout 0.55",
     "evidence": {"decay": 0.62, "slices": [{"name": "pos", "field": "channel", "equals": "pos"}]}},
    {"name": "quality", "passed": True, "detail": "suite passed"},
]}


def monitor_event(hour: datetime) -> dict:
    """The asset event the monitor DAG's request_retrain emits for a failing run at ``hour``."""
    run = f"scheduled__{hour.isoformat()}"
    return {"uri": "ctloop://fraud/retrain-requests", "timestamp": hour.isoformat(),
            "extra": {"reason": "drift: amount drifted", "requested_by": f"monitor:{run}", "source": "monitor",
                      "requested_at": hour.isoformat(), "evidence": evidence_from_checks(CHECKS)}}


def test_continuous_alarms_train_at_most_the_budget_and_the_ledger_links_signal_run_model(tmp_path: Path) -> None:
    ledger, policy = Ledger(LocalLake(tmp_path / "lake"), "fraud"), Policy.from_spec(SPEC)
    produced: dict[str, str] = {}
    outcomes: Counter[str] = Counter()
    for h in range(HOURS):
        hour = START + timedelta(hours=h, minutes=5)
        run_id = f"asset_triggered__{hour.isoformat()}"
        requests = requests_from_run("fraud", run_type="asset_triggered", run_after=hour, conf={},
                                     triggered_by=None, events=[monitor_event(hour)], started_at=hour)
        result = record_decisions(ledger, policy, [RetrainRequest.from_dict(r, pipeline="fraud") for r in requests],
                                  run_id=run_id, now=hour)
        outcomes.update(d["outcome"] for d in result["decisions"])
        if result["accepted"]:
            version = str(len(produced) + 2)
            produced[run_id] = version
            record_finish(ledger, pipeline="fraud", run_id=run_id, now=hour + timedelta(minutes=40),
                          results={"registered": {"model": "ctloop-fraud", "version": version,
                                                  "alias": "challenger"}})

    days = Counter(datetime.fromisoformat(r.split("__")[1]).date() for r in produced)
    assert days and all(n <= SPEC.daily_budget for n in days.values()), days
    assert len(produced) == 3 * SPEC.daily_budget, "every day spends its budget, never more"
    assert outcomes["accepted"] == len(produced) and outcomes["refused"] == HOURS - len(produced)

    finished = [r for r in ledger.records() if r["kind"] == "finished"]
    assert {r["run_id"]: r["model_version"] for r in finished} == produced
    for record in finished:
        [signal] = record["signals"]
        assert signal["source"] == "monitor"
        assert signal["requested_by"] == f"monitor:scheduled__{record['run_id'].split('__')[1]}"
        assert signal["checks"] == ["drift", "performance_pos"]
    decision = next(r for r in ledger.records() if r["kind"] == "decision" and r["outcome"] == "accepted")
    assert decision["request"]["evidence"]["checks"][0]["evidence"]["drifted_features"] == ["amount"]


def test_evidence_reaches_the_note_and_the_gate_slices(tmp_path: Path) -> None:
    requests = requests_from_run("fraud", run_type="asset_triggered", run_after=START, conf={}, triggered_by=None,
                                 events=[monitor_event(START), monitor_event(START + timedelta(minutes=1))])
    assert [c["name"] for c in extra_slices(requests)] == ["amount_500_plus", "pos"]
    lines = evidence_lines(requests)
    assert lines[0] == (f"evidence from monitor:scheduled__{START.isoformat()}: drift: amount drifted (PSI 0.41) "
                        "(file:///lake/_reports/drift.html)")
    assert lines[-1] == "the gate also checks the slices the evidence names: amount_500_plus, pos"
    manual = requests_from_run("fraud", run_type="manual", run_after=START, triggered_by="ana", events=[],
                               conf={"reason": "looked bad", "evidence": evidence_from_checks(CHECKS)})
    assert manual[0]["evidence"]["slices"][0]["name"] == "amount_500_plus"

    pipelines, _ = make_pipeline(tmp_path)
    spec = load_spec("fraud", pipelines)
    gated, notes = with_extra_slices(spec, [*extra_slices(requests), {"name": "mcc", "field": "mcc", "equals": "x"}],
                                     ["amount", "channel", "is_fraud"])
    names = [c.name for c in gated.evaluation.slices]
    assert names == ["online", "pos", "high_value", "amount_500_plus"], "a declared name is not added twice"
    assert notes == ["slice mcc from the retrain evidence not evaluated: the holdout has no 'mcc'"]
    assert [c.name for c in spec.evaluation.slices] == ["online", "pos", "high_value"], "the spec itself is unchanged"
