"""The prediction log: every answered prediction as an event on the pipeline's ``serving.predictions`` stream.

A request never waits for Kafka and never fails because of it. Answering a request only appends its
records to a bounded in-memory queue (``serving.log_queue`` records); one background thread hands them
to a kafka-python producer (``acks=all``), which batches and sends them. When the broker is down:

- records wait in the queue (a record leaves it only once the producer has accepted it);
- once the queue holds ``serving.log_queue`` records, each new one is dropped and counted in
  ``ctloop_serving_predictions_dropped_total{reason="queue_full"}``;
- records the producer had already accepted and then could not deliver (its retries and delivery
  timeout spent) are counted as ``reason="delivery_failed"``;
- when the broker is back, the queue drains in order. ``ctloop_serving_prediction_log_queue`` and
  ``ctloop_serving_prediction_log_connected`` show it happening; acknowledged records count in
  ``ctloop_serving_predictions_logged_total``.

On shutdown the thread has a few seconds to drain the queue and flush the producer; what is left
then is lost (and counted). The lander lands the stream like any other: one event per prediction,
its id unique, so each prediction is in the lake exactly once.

The stream's fields are filled by name (see ``prediction_fields``): the stream's ``id_field`` gets the
prediction's id (the request's id, ``-<row>`` appended when the request carried several rows) and
its ``time_field`` the time it was answered; a field the server cannot fill is a spec error at start.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import msgspec

from ctloop.config.settings import Settings
from ctloop.config.spec import EventSpec, PipelineSpec, SpecError
from ctloop.serving.metrics import ServingMetrics

# fields the server fills besides the stream's id and time fields and the primary event's id and entity keys
FIXED_FIELDS: dict[str, set[str]] = {
    "client_id": {"string"}, "features": {"string"}, "model": {"string"}, "model_version": {"string"},
    "slot": {"string"}, "score": {"double"}, "threshold": {"double"}, "decision": {"int", "bool"},
}


def prediction_fields(spec: PipelineSpec, entity_keys: list[str]) -> dict[str, set[str]]:
    """Every field the server can fill in a prediction event, with the types it may have."""
    assert spec.serving.predictions is not None
    event = spec.events[spec.serving.predictions]
    primary = spec.events[spec.primary]
    fields = {event.id_field: {"string"}, event.time_field: {"timestamp"}, **FIXED_FIELDS}
    for name in [primary.id_field, *entity_keys]:
        fields[name] = {primary.fields[name].type}
    return fields


def check_stream(spec: PipelineSpec, entity_keys: list[str]) -> EventSpec:
    """The predictions stream, if the server can fill every field it declares; else a SpecError naming them."""
    name = spec.serving.predictions
    assert name is not None
    event = spec.events[name]
    known = prediction_fields(spec, entity_keys)
    problems = [f"{field!r} is not something the server logs (it logs: {', '.join(known)})"
                for field in event.fields if field not in known]
    problems += [f"{field!r} has type {f.type}, the server logs {'/'.join(sorted(known[field]))}"
                 for field, f in event.fields.items() if field in known and f.type not in known[field]]
    if problems:
        raise SpecError(f"pipeline {spec.name!r}: serving.predictions: events.{name}: " + "; ".join(problems))
    return event


class PredictionLog:
    """Bounded queue + background thread + Kafka producer; ``offer`` never blocks (see the module doc)."""

    def __init__(self, spec: PipelineSpec, settings: Settings, event: EventSpec, metrics: ServingMetrics, *,
                 retry_s: float = 1.0) -> None:
        self.spec, self.settings, self.event, self.metrics = spec, settings, event, metrics
        self.bound = spec.serving.log_queue
        self._records: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._drain_until = 0.0
        self._retry_s = retry_s
        self._producer: Any = None
        self._said_at = -1e9
        self._thread = threading.Thread(target=self._run, name="ctloop-prediction-log", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------------------------
    def offer(self, records: list[dict[str, Any]]) -> int:
        """Queue ``records`` for the broker; returns how many were dropped because the queue is full."""
        with self._cond:
            room = max(self.bound - len(self._records), 0)
            taken = records[:room]
            self._records.extend(taken)
            depth = len(self._records)
            self._cond.notify()
        dropped = len(records) - len(taken)
        if dropped:
            self.metrics.dropped.labels("queue_full").inc(dropped)
        self.metrics.log_queue.set(depth)
        return dropped

    def waiting(self) -> int:
        with self._cond:
            return len(self._records)

    # -- shutdown -------------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 5.0) -> None:
        """Drain the queue for up to ``timeout_s``, flush the producer, stop; what is left is counted as dropped."""
        with self._cond:
            self._closing = True
            self._drain_until = time.monotonic() + timeout_s
            self._cond.notify()
        self._thread.join(timeout_s + 5)
        producer = self._producer
        if producer is not None:
            try:
                producer.flush(timeout=max(self._drain_until - time.monotonic(), 0.5))
            except Exception:  # noqa: BLE001, S110 - best effort at shutdown
                pass
            try:
                producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
        with self._cond:
            left = len(self._records)
            self._records.clear()
        if left:
            self.metrics.dropped.labels("queue_full").inc(left)
            _log(f"shutdown: {left} predictions were never handed to the broker (counted as dropped)")
        self.metrics.log_queue.set(0)

    # -- the background thread -----------------------------------------------------------------------------
    def _kafka_producer(self) -> Any:
        from kafka import KafkaProducer

        from ctloop.ingest.broker import client_config

        return KafkaProducer(**client_config(self.settings), acks="all", linger_ms=20, max_block_ms=5_000,
                             request_timeout_ms=10_000, delivery_timeout_ms=60_000)

    def _run(self) -> None:
        from kafka.errors import KafkaTimeoutError

        while True:
            with self._cond:
                while not self._records and not self._closing:
                    self._cond.wait(1.0)
                if self._closing and (not self._records or time.monotonic() > self._drain_until):
                    return
                record = self._records[0] if self._records else None
            if record is None:
                continue
            if self._producer is None and not self._connect():
                self._sleep(self._retry_s)
                continue
            try:
                key, value = encode(self.event, record)
                future = self._producer.send(self.event.topic, key=key, value=value)
            except KafkaTimeoutError:  # no metadata within max_block_ms: the broker is away; keep the record
                self._say_waiting()
                continue
            except Exception as exc:  # noqa: BLE001 - a record the producer refuses for good (too large, ...)
                self._pop(record)
                self.metrics.dropped.labels("delivery_failed").inc()
                _log(f"prediction {record.get(self.event.id_field)!r} refused by the producer: {exc}")
                continue
            self.metrics.log_connected.set(1)
            self._pop(record)
            future.add_callback(lambda _meta: self.metrics.logged.inc())
            future.add_errback(self._failed)

    def _connect(self) -> bool:
        """Make sure the topic exists (one quick attempt), then create the producer; False while no broker answers."""
        from ctloop.ingest.broker import BrokerUnavailable, ensure_topics

        quick = self.settings.model_copy(update={"kafka_connect_timeout_s": 1.0})
        try:
            ensure_topics(self.spec, quick)
            self._producer = self._kafka_producer()
        except BrokerUnavailable:
            self._say_waiting()
            return False
        except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends: retry, never raise
            self._say_waiting(exc)
            return False
        return True

    def _say_waiting(self, exc: Exception | None = None) -> None:
        self.metrics.log_connected.set(0)
        now = time.monotonic()
        if now - self._said_at >= 60:  # once a minute, not once a retry
            self._said_at = now
            _log(f"prediction log: no broker at {self.settings.kafka_bootstrap}" + (f" ({exc})" if exc else "")
                 + f"; {self.waiting()} predictions waiting (at most {self.bound}, then dropped and counted)")

    def _pop(self, record: dict[str, Any]) -> None:
        with self._cond:
            if self._records and self._records[0] is record:
                self._records.popleft()
            depth = len(self._records)
        self.metrics.log_queue.set(depth)

    def _failed(self, exc: Exception) -> None:
        self.metrics.dropped.labels("delivery_failed").inc()
        _log(f"prediction log: a record was not delivered ({exc})")

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._closing:
                self._cond.wait(seconds)


def encode(event: EventSpec, record: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """A prediction as the Kafka message the lander validates: key (the stream's key field) and JSON value."""
    body = {name: record[name] for name in event.fields if name in record}
    if isinstance(body.get("features"), dict):
        body["features"] = msgspec.json.encode(body["features"]).decode()
    key = body.get(event.key)
    return (str(key).encode() if key is not None else None), msgspec.json.encode(body)


def records(*, event: EventSpec, request_id: str, client_id: str | None, rows: list[dict[str, Any]],
            served: list[dict[str, Any]], scores: list[float], decisions: list[int], keys: list[str],
            model: str, version: str, slot: str, threshold: float, served_at: datetime) -> list[dict[str, Any]]:
    """The prediction events of one answered request (cheap: encoding happens on the log's thread)."""
    many = len(rows) > 1
    out = []
    for i, row in enumerate(rows):
        record = {event.id_field: f"{request_id}-{i}" if many else request_id, event.time_field: served_at,
                  "client_id": client_id, "features": served[i], "model": model, "model_version": version,
                  "slot": slot, "score": scores[i], "threshold": threshold, "decision": decisions[i]}
        for key in keys:
            record[key] = row[key]
        out.append(record)
    if event.fields.get("decision") is not None and event.fields["decision"].type == "bool":
        for record in out:
            record["decision"] = bool(record["decision"])
    return out


def _log(message: str) -> None:
    print(f"[serving] {message}", file=sys.stderr, flush=True)
