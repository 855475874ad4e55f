"""The lander's Prometheus metrics, served on ``CTLOOP_METRICS_PORT`` (the Grafana dashboard reads these names)."""

from __future__ import annotations


class LanderMetrics:
    """Events landed by outcome, consumer lag and the time of the last landing, per pipeline."""

    def __init__(self, pipeline: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        registry = CollectorRegistry()
        self.events = Counter("ctloop_lander_events", "Events committed to the lake, by outcome.",
                              ["pipeline", "outcome"], registry=registry)
        self.lag = Gauge("ctloop_lander_consumer_lag", "Records behind the partitions' high watermarks.",
                         ["pipeline"], registry=registry)
        self.last_landed = Gauge("ctloop_lander_last_landed_timestamp_seconds",
                                 "Unix time of the last committed landing.", ["pipeline"], registry=registry)
        self.pipeline = pipeline
        start_http_server(port, registry=registry)

    def landed(self, rows: int, dead_letters: int) -> None:
        self.events.labels(self.pipeline, "landed").inc(rows)
        self.events.labels(self.pipeline, "dead_letter").inc(dead_letters)
        self.last_landed.labels(self.pipeline).set_to_current_time()
