"""``ctloop produce``: the simulator's messages onto the pipeline's topics, at a chosen rate."""

from __future__ import annotations

import sys
import time
from typing import Any

from kafka import KafkaProducer

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.ingest.broker import client_config, connect, ensure_topics
from ctloop.sim.simulator import DriftKind, Tally, load_simulator


def produce(spec: PipelineSpec, settings: Settings, *, events: int, seed: int = 0, rate: float | None = None,
            bad_fraction: float = 0.0, drift_at: int | None = None, drift_kind: DriftKind = "covariate",
            progress_every_s: float = 5.0) -> dict[str, Any]:
    if events < 0:
        raise ValueError(f"--events must be >= 0, got {events}")
    if not 0 <= bad_fraction < 1:
        raise ValueError(f"--bad-fraction must be in [0, 1), got {bad_fraction}")
    if rate is not None and rate <= 0:
        raise ValueError(f"--rate must be > 0 events/s, got {rate}")
    if drift_at is not None and not 0 <= drift_at < max(events, 1):
        raise ValueError(f"--drift-at must be an event index in [0, {events}), got {drift_at}")
    simulator = load_simulator(spec, seed)
    ensure_topics(spec, settings)
    producer = connect(lambda: KafkaProducer(
        **client_config(settings), acks="all", linger_ms=20, batch_size=512 * 1024, max_request_size=4 * 2**20,
    ), settings, "produce")
    tally = Tally()
    started = last_report = time.monotonic()
    try:
        for n, msg in enumerate(simulator.messages(events, bad_fraction=bad_fraction, drift_at=drift_at,
                                                   drift_kind=drift_kind), start=1):
            producer.send(msg.topic, key=msg.key, value=msg.value, timestamp_ms=msg.timestamp_ms)
            tally.add(msg)
            if rate is not None:
                ahead = n / rate - (time.monotonic() - started)
                if ahead > 0.01:
                    time.sleep(ahead)
            now = time.monotonic()
            if now - last_report >= progress_every_s:
                last_report = now
                print(f"[produce {spec.name}] {n:,} messages, {n / (now - started):,.0f}/s",
                      file=sys.stderr, flush=True)
        producer.flush()
    finally:
        producer.close()
    elapsed = time.monotonic() - started
    summary: dict[str, Any] = {
        "pipeline": spec.name, "seed": seed, "events": events, "bad_fraction": bad_fraction,
        "messages": tally.total, "seconds": round(elapsed, 2),
        "messages_per_s": round(tally.total / elapsed, 1) if elapsed else None,
        "topics": tally.as_dict(),
    }
    if drift_at is not None:
        summary["drift"] = simulator.drift_truth(drift_at, drift_kind)
    return summary
