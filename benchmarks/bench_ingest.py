"""Ingest benchmark: the lander's landing rate against a bare kafka-python consumer on the same topic.

Both read the same freshly produced topic on the same embedded broker, with the same consumer
settings; the bare consumer discards what it reads. Rates are measured from the first record
received to the last, so consumer-group joins are not counted. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from ctloop.config.settings import load_settings
from ctloop.config.spec import load_spec
from ctloop.ingest.lander import consumer_config, land
from ctloop.lake.store import LocalLake
from ctloop.sim.producer import produce
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]


def bare_drain(settings, topics: list[str]) -> tuple[int, float]:
    consumer = KafkaConsumer(**consumer_config(settings, f"bench-bare-{uuid.uuid4().hex[:6]}", "bench-bare"))
    consumer.subscribe(topics)
    consumer.topics()
    partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
    end = consumer.end_offsets(partitions)
    total, first = 0, None
    while total < sum(end.values()):
        for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
            if first is None:
                first = time.monotonic()
            total += len(records)
    elapsed = time.monotonic() - first
    consumer.close()
    return total, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 1_000_000)))
    parser.add_argument("--bad-fraction", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/lander runs; the best of each counts")
    parser.add_argument("--flush-records", type=int, default=25_000, help="segment size (records per partition)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctloop-bench-"))
    data = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
    data["simulator"]["params"]["days"] = 1  # a dense day of traffic: files of realistic size
    data["ingest"]["flush_records"] = args.flush_records
    (work / "pipelines").mkdir()
    (work / "pipelines" / "fraud.yaml").write_text(yaml.safe_dump(data))
    port = free_port()
    settings = load_settings(state_dir=work / "state", broker_port=port, kafka_bootstrap=f"127.0.0.1:{port}",
                             pipelines_dir=work / "pipelines", kafka_session_timeout_ms=6000)
    stack = Stack(settings, ["broker"])
    stack.up()
    try:
        spec = load_spec("fraud", settings.pipelines_dir)
        print(f"[bench-ingest] producing {args.events:,} events", file=sys.stderr, flush=True)
        produced = produce(spec, settings, events=args.events, seed=1, bad_fraction=args.bad_fraction)
        topics = [e.topic for e in spec.events.values()]
        bare_rates, lander_rates = [], []
        for round_ in range(1, args.rounds + 1):  # alternate, so drift in machine load hits both alike
            n, seconds = bare_drain(settings, topics)
            bare_rates.append(n / seconds)
            group = spec.ingest.model_copy(update={"consumer_group": f"bench-lander-{round_}"})
            landed = land(spec.model_copy(update={"ingest": group}), settings, LocalLake(work / f"lake-{round_}"),
                          "until_caught_up")
            lander_rates.append(landed["events_per_s"])
            print(f"[bench-ingest] round {round_}: bare {bare_rates[-1]:,.0f}/s, lander {lander_rates[-1]:,.0f}/s",
                  file=sys.stderr, flush=True)
    finally:
        stack.down()
    bare_best, lander_best = max(bare_rates), max(lander_rates)
    result = {
        "bench": "ingest", "events": produced["messages"], "bad_fraction": args.bad_fraction,
        "flush_records": args.flush_records, "rounds": args.rounds,
        "lander_events_per_s": round(lander_best), "baseline": "bare kafka-python consumer, same topic and settings",
        "bare_consumer_events_per_s": round(bare_best), "ratio": round(lander_best / bare_best, 3), "goal_ratio": 0.8,
        "all_rounds": {"lander": [round(r) for r in lander_rates], "bare": [round(r) for r in bare_rates]},
        "files": landed["files"], "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
