"""The simulator is deterministic, plants learnable fraud, injects drift and bad messages the codec rejects."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from statistics import mean

import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.events import EventCodec
from ctloop.sim.simulator import BAD_KINDS, Tally, load_simulator

from tests.conftest import REFERENCE_SPEC

SPEC = load_spec("fraud", REFERENCE_SPEC.parent)


def _messages(n: int, seed: int = 3, **kw):
    return list(load_simulator(SPEC, seed).messages(n, **kw))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b, c = _messages(3000, 3, bad_fraction=0.05), _messages(3000, 3, bad_fraction=0.05), _messages(3000, 4)
    assert [m.value for m in a] == [m.value for m in b]
    assert [m.value for m in a] != [m.value for m in c]


def test_bad_messages_are_exactly_the_ones_the_codec_rejects() -> None:
    msgs = _messages(20_000, bad_fraction=0.04)
    kinds = Counter(m.kind for m in msgs)
    assert set(BAD_KINDS) <= set(kinds), kinds
    for stream in ("transactions", "chargebacks"):
        codec = EventCodec(SPEC.events[stream])
        values = [m.value for m in msgs if m.stream == stream]
        accepted, rejected = codec.validate(values)
        valid = [i for i, m in enumerate(m for m in msgs if m.stream == stream) if m.kind == "valid"]
        assert accepted == valid
        assert len(rejected) == len(values) - len(valid)


def test_rejections_name_what_is_wrong() -> None:
    codec = EventCodec(SPEC.events["transactions"])
    good = json.loads(_messages(1)[0].value)
    cases = {
        json.dumps({**good, "amount": "12,50"}): "Expected `float`, got `str` - at `$.amount`",
        json.dumps({**good, "amount": -1}): "Expected `float` >= 0.0 - at `$.amount`",
        json.dumps({**good, "channel": "fax"}): "Invalid enum value 'fax' - at `$.channel`",
        json.dumps({k: v for k, v in good.items() if k != "card_id"}): "Object missing required field `card_id`",
        json.dumps({**good, "event_time": "2026-01-01T00:00:00"}): "Expected `datetime` with a timezone component",
        '{"transaction_id": ': "malformed JSON",
        json.dumps({**good, "note": "x" * 20_000}): "exceeds max_event_bytes=16384",
    }
    _, rejected = codec.validate([v.encode() for v in cases])
    assert len(rejected) == len(cases)
    for rejection, expected in zip(rejected, cases.values(), strict=True):
        assert expected in rejection.error


def test_codec_table_has_spec_types() -> None:
    codec = EventCodec(SPEC.events["transactions"])
    values = [m.value for m in _messages(500) if m.stream == "transactions"]
    table = codec.to_table(values)
    assert table.num_rows == len(values)
    assert str(table.schema.field("event_time").type) == "timestamp[us, tz=UTC]"
    assert table.column("amount").to_pylist()[0] == json.loads(values[0])["amount"]


def test_fraud_is_learnable_and_labels_arrive_later() -> None:
    msgs = _messages(60_000)
    txns = {json.loads(m.value)["transaction_id"]: json.loads(m.value) for m in msgs if m.stream == "transactions"}
    chargebacks = [json.loads(m.value) for m in msgs if m.stream == "chargebacks"]
    fraud_ids = {c["transaction_id"] for c in chargebacks if c["reason"] == "fraud"}
    assert 0.005 < len(fraud_ids) / len(txns) < 0.05
    for cb in chargebacks:
        paid = datetime.fromisoformat(txns[cb["transaction_id"]]["event_time"])
        delay = datetime.fromisoformat(cb["reported_at"]) - paid
        assert 0 < delay.total_seconds() <= 30 * 86400
    risky = [t for t in txns.values()
             if t["channel"] == "online" and t["merchant_category"] in ("electronics", "gift_cards", "jewelry")]
    risky_rate = sum(t["transaction_id"] in fraud_ids for t in risky) / len(risky)
    assert risky_rate > 10 * len(fraud_ids) / len(txns)  # a pattern a model can find


@pytest.mark.parametrize("kind", ["covariate", "concept"])
def test_drift_changes_what_the_truth_says(kind: str) -> None:
    n = 40_000
    msgs = _messages(n, drift_at=n // 2, drift_kind=kind)
    txns = [json.loads(m.value) for m in msgs if m.stream == "transactions"]
    before, after = txns[: n // 2], txns[n // 2:]
    truth = load_simulator(SPEC, 3).drift_truth(n // 2, kind)
    assert truth["kind"] == kind and truth["at_event"] == n // 2
    if kind == "covariate":
        assert mean(t["amount"] for t in after) > 1.4 * mean(t["amount"] for t in before)
    else:
        fraud = {json.loads(m.value)["transaction_id"] for m in msgs if m.stream == "chargebacks"}

        def share(rows: list[dict]) -> float:
            return mean(t["merchant_category"] in ("grocery", "fuel", "pharmacy")
                        for t in rows if t["transaction_id"] in fraud)
        assert share(after) > share(before) + 0.3


def test_tally_counts_by_topic_and_kind() -> None:
    tally = Tally()
    for m in _messages(2000, bad_fraction=0.1):
        tally.add(m)
    summary = tally.as_dict()
    assert summary["fraud.transactions"]["total"] == 2000
    assert summary["fraud.transactions"]["counts"]["valid"] < 2000
    assert summary["fraud.transactions"]["first_event_id"]
