"""Deterministic event simulators behind ``ctloop produce``.

A simulator turns (spec, seed) into the same stream of Kafka messages every time, so tests can
recompute the ground truth (which ids are valid, which messages are bad) without reading Kafka.
The fraud simulator plants learnable patterns: compromised cards burst abroad and online,
skimmed merchants, night-time spend; chargebacks for fraud arrive days later on their own topic.
"""

from __future__ import annotations

import heapq
import importlib
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import msgspec

from ctloop.config.spec import PipelineSpec, SpecError

BadKind = Literal["malformed_json", "wrong_type", "missing_field", "oversized"]
BAD_KINDS: tuple[BadKind, ...] = ("malformed_json", "wrong_type", "missing_field", "oversized")
DriftKind = Literal["covariate", "concept"]


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka message: ``kind`` is ``valid`` or the way it was corrupted."""

    stream: str
    topic: str
    key: bytes
    value: bytes
    kind: str
    event_id: str | None
    timestamp_ms: int  # Kafka record time = event time, so the lander's rotation follows event time


class Simulator(Protocol):
    def messages(
        self, events: int, *, bad_fraction: float = 0.0, drift_at: int | None = None,
        drift_kind: DriftKind = "covariate",
    ) -> Iterator[SimMessage]: ...

    def drift_truth(self, drift_at: int, drift_kind: DriftKind) -> dict[str, Any]: ...


def load_simulator(spec: PipelineSpec, seed: int) -> Simulator:
    if spec.simulator is None:
        raise SpecError(f"pipeline {spec.name!r}: simulator: not set, so `ctloop produce` has nothing to run")
    module_name, _, cls_name = spec.simulator.generator.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"pipeline {spec.name!r}: simulator.generator: cannot import "
                        f"{spec.simulator.generator!r}: {exc}") from None
    return cls(spec, seed, **spec.simulator.params)


COUNTRIES = {"DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR", "IT": "EUR", "GB": "GBP", "US": "USD",
             "CH": "CHF", "SE": "SEK", "PL": "PLN"}
HOME_WEIGHTS = {"DE": 30, "FR": 20, "GB": 15, "NL": 8, "ES": 8, "IT": 8, "SE": 4, "PL": 4, "CH": 3}
EVERYDAY = ["grocery", "fuel", "restaurants", "pharmacy", "fashion", "online_services", "travel"]
EVERYDAY_W = [30, 14, 18, 8, 12, 12, 6]
FRAUDY = ["electronics", "gift_cards", "jewelry", "travel", "online_services"]
FRAUDY_W = [35, 25, 15, 15, 10]
# concept drift: fraudsters switch to small domestic card-present spend that looks like everyday use
CONCEPT_FRAUD = ["grocery", "fuel", "pharmacy"]
CATEGORY_SCALE = {"grocery": 0.8, "fuel": 1.0, "restaurants": 0.9, "pharmacy": 0.6, "fashion": 1.8,
                  "online_services": 0.5, "travel": 5.0, "electronics": 4.0, "gift_cards": 2.5, "jewelry": 6.0}


@dataclass(slots=True)
class _Card:
    card_id: str
    home: str
    spend: float  # median everyday amount


@dataclass(order=True, slots=True)
class _Pending:
    at: datetime
    seq: int
    payload: dict[str, Any] = field(compare=False)


class FraudSimulator:
    """Card transactions with delayed chargebacks; see the module docstring for the patterns."""

    def __init__(self, spec: PipelineSpec, seed: int, *, start: str = "2026-01-01T00:00:00Z", days: float = 60,
                 cards: int = 5000, merchants: int = 800, fraud_rate: float = 0.012,
                 max_label_delay_days: float = 30) -> None:
        self.spec = spec
        self.seed = seed
        self.start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        self.days = days
        self.fraud_rate = fraud_rate
        self.max_label_delay = timedelta(days=max_label_delay_days)
        setup = random.Random(f"{seed}:population")
        homes = list(HOME_WEIGHTS)
        self.cards = [
            _Card(f"card-{i:07d}", setup.choices(homes, weights=list(HOME_WEIGHTS.values()))[0],
                  round(math.exp(setup.gauss(3.3, 0.5)), 2))
            for i in range(cards)
        ]
        self.merchants = []
        for i in range(merchants):
            category = setup.choices(EVERYDAY + FRAUDY, weights=EVERYDAY_W + FRAUDY_W)[0]
            country = setup.choices(homes + ["US"], weights=list(HOME_WEIGHTS.values()) + [10])[0]
            self.merchants.append((f"merch-{i:05d}", category, country))
        # a few skimmed merchants: card-present fraud is far more likely there
        self.skimmed = set(setup.sample(range(merchants), max(1, merchants // 50)))

    def drift_truth(self, drift_at: int, drift_kind: DriftKind) -> dict[str, Any]:
        if drift_kind == "covariate":
            changes = {"amount": "x1.7 for every transaction", "channel": "online share +30 points",
                       "country": "cards spend abroad (US) 4x as often", "fraud_pattern": "unchanged"}
        else:
            changes = {"fraud_pattern": "fraud moves to small domestic card-present grocery/fuel/pharmacy spend",
                       "fraud_rate": "x2", "amount": "fraud amounts now below the card's usual spend",
                       "inputs": "marginal distributions of legitimate spend unchanged"}
        return {"at_event": drift_at, "kind": drift_kind, "changes": changes}

    # -- generation ---------------------------------------------------------------------------
    def messages(self, events: int, *, bad_fraction: float = 0.0, drift_at: int | None = None,
                 drift_kind: DriftKind = "covariate") -> Iterator[SimMessage]:
        rng = random.Random(f"{self.seed}:stream")
        bad_rng = random.Random(f"{self.seed}:bad")
        mean_gap = self.days * 86400 / max(events, 1)
        now = self.start
        pending: list[_Pending] = []  # chargebacks waiting for their report time
        compromised: dict[str, datetime] = {}  # card id -> end of its fraud burst
        seq = 0
        for i in range(events):
            now += timedelta(seconds=rng.expovariate(1 / mean_gap))
            while pending and pending[0].at <= now:
                yield from self._emit(self.spec.labels.events, heapq.heappop(pending).payload, bad_rng, bad_fraction)
            drifted = drift_kind if drift_at is not None and i >= drift_at else None
            txn, is_fraud = self._transaction(rng, now, drifted, compromised)
            corrupted = False
            for msg in self._emit(self.spec.primary, txn, bad_rng, bad_fraction):
                corrupted = msg.kind != "valid"
                yield msg
            if corrupted:
                continue
            report = self._chargeback(rng, txn, is_fraud)
            if report is not None:
                seq += 1
                heapq.heappush(pending, _Pending(report["_at"], seq, report))
        # labels that would arrive after the last transaction have not arrived yet: they stay pending

    def _transaction(self, rng: random.Random, now: datetime, drift: str | None,
                     compromised: dict[str, datetime]) -> tuple[dict[str, Any], bool]:
        card = self.cards[rng.randrange(len(self.cards))]
        fraud_rate = self.fraud_rate * (2 if drift == "concept" else 1)
        if now < compromised.get(card.card_id, self.start) and rng.random() < 0.7:
            is_fraud = True  # burst on a compromised card: velocity is a signal
        else:
            is_fraud = rng.random() < fraud_rate
            if is_fraud:
                compromised[card.card_id] = now + timedelta(hours=rng.uniform(0.5, 6))
        hour = now.hour
        if is_fraud and drift == "concept":
            category = rng.choice(CONCEPT_FRAUD)
            merchant = self._merchant(rng, category, card.home)
            amount = card.spend * rng.uniform(0.2, 0.8)
            channel, country = "pos", card.home
        elif is_fraud:
            category = rng.choices(FRAUDY, weights=FRAUDY_W)[0]
            abroad = rng.random() < 0.65
            country = rng.choice(["US", "GB", "NL", "ES"]) if abroad else card.home
            merchant = self._merchant(rng, category, country)
            amount = card.spend * CATEGORY_SCALE[category] * math.exp(rng.gauss(1.2, 0.5))
            channel = "online" if rng.random() < 0.75 else "pos"
            if 1 <= hour <= 5 or rng.random() < 0.3:
                amount *= 1.3
        else:
            if rng.random() < 0.004:  # skimmed merchants turn some card-present visits into fraud
                idx = rng.choice(sorted(self.skimmed))
                merchant, category, country = self.merchants[idx]
                is_fraud = rng.random() < 0.6
            else:
                category = rng.choices(EVERYDAY, weights=EVERYDAY_W)[0]
                abroad_p = 0.05 * (4 if drift == "covariate" else 1)
                country = ("US" if drift == "covariate" else rng.choice(list(HOME_WEIGHTS))) \
                    if rng.random() < abroad_p else card.home
                merchant = self._merchant(rng, category, country)
            amount = card.spend * CATEGORY_SCALE[category] * math.exp(rng.gauss(0, 0.45))
            online_p = {"online_services": 0.95, "travel": 0.6, "fashion": 0.35}.get(category, 0.08)
            channel = "online" if rng.random() < online_p else ("atm" if rng.random() < 0.04 else "pos")
        if drift == "covariate":
            amount *= 1.7
            if channel == "pos" and rng.random() < 0.3:
                channel = "online"
        txn = {
            "transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "card_id": card.card_id,
            "merchant_id": merchant,
            "amount": round(min(amount, 999_999.0), 2),
            "currency": COUNTRIES[card.home],
            "merchant_category": category,
            "country": country,
            "channel": channel,
            "event_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        return txn, is_fraud

    def _merchant(self, rng: random.Random, category: str, country: str) -> str:
        # deterministic pick among a handful of merchants per (category, country)
        return f"merch-{category[:4]}-{country}-{rng.randrange(40):02d}"

    def _chargeback(self, rng: random.Random, txn: dict[str, Any], is_fraud: bool) -> dict[str, Any] | None:
        if is_fraud:
            if rng.random() > 0.92:  # some fraud is never reported
                return None
            reason = "fraud"
        elif rng.random() < 0.002:  # friendly fraud / disputes: label noise
            reason = rng.choice(["not_received", "duplicate", "other"])
        else:
            return None
        delay = timedelta(days=min(math.exp(rng.gauss(1.8, 0.7)), self.max_label_delay.days - 0.01))
        at = datetime.fromisoformat(txn["event_time"].replace("Z", "+00:00")) + delay
        return {
            "chargeback_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "transaction_id": txn["transaction_id"],
            "card_id": txn["card_id"],
            "reason": reason,
            "reported_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "_at": at,
        }

    def _emit(self, stream: str, payload: dict[str, Any], bad_rng: random.Random,
              bad_fraction: float) -> Iterator[SimMessage]:
        event = self.spec.events[stream]
        body = {k: v for k, v in payload.items() if not k.startswith("_")}
        key = str(body[event.key]).encode()
        event_id = body[event.id_field]
        at = datetime.fromisoformat(body[event.time_field].replace("Z", "+00:00"))
        ts = int(at.timestamp() * 1000)
        if bad_fraction and bad_rng.random() < bad_fraction:
            kind = bad_rng.choice(BAD_KINDS)
            required = sorted(name for name, f in event.fields.items() if f.required)
            yield SimMessage(stream, event.topic, key,
                             _corrupt(body, kind, event.max_event_bytes, event.time_field, required, bad_rng),
                             kind, None, ts)
            return
        yield SimMessage(stream, event.topic, key, msgspec.json.encode(body), "valid", event_id, ts)


def _corrupt(body: dict[str, Any], kind: BadKind, max_bytes: int, time_field: str, required: list[str],
             rng: random.Random) -> bytes:
    body = dict(body)
    if kind == "malformed_json":
        raw = msgspec.json.encode(body)
        return raw[: rng.randrange(1, len(raw) - 1)] + b"\x00}"
    if kind == "wrong_type":
        victim = rng.choice(sorted(body))
        if victim == time_field:
            body[victim] = 1_700_000_000
        else:
            body[victim] = {"nested": True} if isinstance(body[victim], str) else "not-a-number"
    elif kind == "missing_field":
        del body[rng.choice(required)]
    else:  # oversized
        body["note"] = "x" * (max_bytes + rng.randrange(1, 1024))
    return msgspec.json.encode(body)


class Tally:
    """Counts by topic and kind, first and last event id: the ground truth a test or a person checks."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self.first: dict[str, str] = {}
        self.last: dict[str, str] = {}

    def add(self, msg: SimMessage) -> None:
        self.counts.setdefault(msg.topic, Counter())[msg.kind] += 1
        if msg.event_id is not None:
            self.first.setdefault(msg.topic, msg.event_id)
            self.last[msg.topic] = msg.event_id

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {topic: {"counts": dict(c), "total": sum(c.values()), "first_event_id": self.first.get(topic),
                        "last_event_id": self.last.get(topic)} for topic, c in self.counts.items()}


def synthetic_training_frame(spec: PipelineSpec, rows: int, seed: int, start: datetime, days: int,
                             base_rate: float = 0.02, signal: float = 1.0) -> Any:
    """A frame shaped like the spec's training snapshots, without running Spark and Feast.

    For tests and benchmarks of training only: a latent risk per row drives the label and tilts
    every feature and request field, so a model can learn (``signal=0`` gives pure noise). Columns:
    every primary field, every feature column, ``event_timestamp`` and the target.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    primary = spec.events[spec.primary]
    risk = rng.normal(size=rows)
    logit = math.log(base_rate / (1 - base_rate)) + 3.0 * signal * risk - 2.0 * signal**2
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    seconds = np.sort(rng.integers(0, days * 86400, size=rows))
    frame = pd.DataFrame({"event_timestamp": pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s")})
    for name, field_spec in primary.fields.items():
        if name == primary.time_field:
            frame[name] = frame["event_timestamp"]
        elif field_spec.allowed:
            weights = rng.normal(size=len(field_spec.allowed))
            tilt = np.exp(np.outer(signal * risk, weights))
            cum = np.cumsum(tilt / tilt.sum(axis=1, keepdims=True), axis=1)
            picks = (cum < rng.random((rows, 1))).sum(axis=1)
            frame[name] = np.asarray(field_spec.allowed, dtype=object)[np.minimum(picks, len(field_spec.allowed) - 1)]
        elif field_spec.type in ("int", "double"):
            low = field_spec.min or 0.0
            frame[name] = low + np.exp(3 + 0.8 * signal * risk + rng.normal(size=rows))
        elif field_spec.type == "bool":
            frame[name] = rng.random(rows) < 1 / (1 + np.exp(-signal * risk))
        else:
            frame[name] = [f"{name[:3]}-{seed}-{i}" for i in range(rows)]
    rates = {a.name for view in (spec.features.views.values() if spec.features else []) for a in view.aggregations
             if a.function == "label_rate"}
    for i, (name, dtype) in enumerate(spec.feature_columns.items()):
        direction = 1 if i % 2 == 0 else -1
        values = np.exp(1 + 0.8 * direction * signal * risk + rng.normal(size=rows))
        if name in rates:
            values = values / (values + 50)  # a rate: within [0, 1], mostly small
        values[rng.random(rows) < 0.03] = np.nan  # Feast finds no row for some entities
        frame[name] = np.round(values) if dtype == "int" else values
    frame[spec.labels.target] = label
    return frame
