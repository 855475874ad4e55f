"""Kafka connections shared by the producer, the lander and the benchmarks.

Connecting retries an unreachable broker with a message on every attempt, so a lander started
before its broker waits for it instead of failing, and says why it is waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from kafka.errors import KafkaError, KafkaTimeoutError

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec

T = TypeVar("T")
ATTEMPT_TIMEOUT_MS = 5_000


class BrokerUnavailable(RuntimeError):
    """No broker answered within ``CTLOOP_KAFKA_CONNECT_TIMEOUT_S``."""


def client_config(settings: Settings) -> dict[str, object]:
    """Connection settings every Kafka client of ctloop shares (bootstrap, TLS, SASL)."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
        "bootstrap_timeout_ms": ATTEMPT_TIMEOUT_MS,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
    return config


def connect(factory: Callable[[], T], settings: Settings, what: str) -> T:
    """Call ``factory`` until the broker answers or the connect timeout runs out."""
    deadline = time.monotonic() + settings.kafka_connect_timeout_s
    attempt, delay = 0, 1.0
    while True:
        attempt += 1
        try:
            return factory()
        except KafkaTimeoutError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable(
                    f"{what}: no Kafka broker reachable at {settings.kafka_bootstrap} after {attempt} attempts "
                    f"over {settings.kafka_connect_timeout_s:.0f}s ({exc}). Is it running? (`ctloop stack status`; "
                    "set CTLOOP_KAFKA_BOOTSTRAP)"
                ) from None
            wait = min(delay, left)
            print(f"[{what}] broker {settings.kafka_bootstrap} not reachable (attempt {attempt}: {exc}); "
                  f"retrying in {wait:.0f}s, giving up in {left:.0f}s", file=sys.stderr, flush=True)
            time.sleep(wait)
            delay = min(delay * 2, 10.0)


def ensure_topics(spec: PipelineSpec, settings: Settings) -> list[str]:
    """Create the spec's topics with their partition counts; returns those it created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = connect(lambda: KafkaAdminClient(**client_config(settings)), settings, "topics")
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(e.topic, e.partitions, 1) for e in spec.events.values() if e.topic not in existing]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another process won the race
        return created
    except KafkaError as exc:
        raise BrokerUnavailable(f"topics: cannot create topics for pipeline {spec.name!r}: {exc}") from None
    finally:
        admin.close()
