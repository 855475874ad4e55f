"""Event-driven scheduling from Kafka: a retrain request on ``CTLOOP_RETRAIN_TOPIC`` becomes an
asset event on ``ctloop://<pipeline>/retrain-requests``, which schedules the train DAG.

Airflow's own Kafka provider needs confluent-kafka; ctloop already speaks Kafka through
kafka-python, so this trigger polls with it in a thread (the triggerer's event loop must never
block). Each pipeline's trigger reads every partition of the topic (assigned by hand, its offsets
stored under the group ``ctloop-retrain-<pipeline>``) and keeps the messages naming its pipeline.
The offsets are committed after the triggerer took the events, so a restart can repeat a request
but not lose one; the retrain policy merges repeats (merge window).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class RetrainRequestTrigger(BaseEventTrigger):
    def __init__(self, *, pipeline: str, topic: str, group_id: str, poll_timeout_s: float = 2.0) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.topic = topic
        self.group_id = group_id
        self.poll_timeout_s = poll_timeout_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"pipeline": self.pipeline, "topic": self.topic, "group_id": self.group_id,
                 "poll_timeout_s": self.poll_timeout_s})

    def _consumer(self) -> Any:
        """A consumer on every partition of the topic, assigned by hand: no group membership, so no
        rebalance when the triggerer restarts the trigger; the group only stores the offsets."""
        from ctloop.config.settings import load_settings
        from ctloop.ingest.broker import client_config, connect
        from kafka import KafkaConsumer, TopicPartition

        settings = load_settings()  # the triggerer's CTLOOP_* environment: bootstrap, TLS, SASL
        consumer = connect(lambda: KafkaConsumer(**client_config(settings), group_id=self.group_id,
                                                 enable_auto_commit=False, auto_offset_reset="earliest"),
                           settings, "retrain-trigger")
        while not (partitions := consumer.partitions_for_topic(self.topic)):
            time.sleep(5)  # the topic appears with its first request (or `ctloop retrain request`)
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        return consumer

    def parse(self, value: bytes, timestamp_ms: int) -> dict[str, Any] | None:
        """The request in a message, or None when it is not for this pipeline or not a request."""
        try:
            data = json.loads(value)
        except (ValueError, TypeError):
            self.log.warning("retrain topic %s: skipping a message that is not JSON", self.topic)
            return None
        if not isinstance(data, dict) or data.get("pipeline") != self.pipeline:
            return None
        if not str(data.get("reason") or "").strip():
            self.log.warning("retrain topic %s: skipping a request without a reason: %r", self.topic, data)
            return None
        return {"pipeline": self.pipeline, "reason": str(data["reason"])[:500],
                "requested_by": str(data.get("requested_by") or "kafka"), "source": "kafka",
                "requested_at": datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat()}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        consumer = await asyncio.to_thread(self._consumer)
        try:
            while True:
                batches = await asyncio.to_thread(consumer.poll, timeout_ms=int(self.poll_timeout_s * 1000))
                for records in batches.values():
                    for record in records:
                        request = self.parse(record.value, record.timestamp)
                        if request is not None:
                            self.log.info("retrain request for %s: %s", self.pipeline, request)
                            yield TriggerEvent(request)
                if batches:
                    await asyncio.to_thread(consumer.commit)
        finally:
            await asyncio.to_thread(consumer.close)
