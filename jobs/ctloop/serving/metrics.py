"""Prometheus metrics of a serving slot, exposed on ``GET /metrics``.

Each server holds its own registry (two apps in one process, as in tests, never collide). Names:

- ``ctloop_serving_request_seconds{route}``: latency histogram, by route (``infer``, ``metadata``, …);
- ``ctloop_serving_requests_total{route,status}`` and ``ctloop_serving_errors_total{route,status}``;
- ``ctloop_serving_batch_rows`` and ``ctloop_serving_batch_requests``: what each model call scored;
- ``ctloop_serving_feature_lookup_seconds``, ``ctloop_serving_model_seconds``: the two parts of a batch;
- ``ctloop_serving_feature_age_seconds{view}``: now minus the served feature row's event time;
  ``ctloop_serving_features_missing_total{view}``: rows the online store had nothing for;
- ``ctloop_serving_model_info{pipeline,model,version,alias,slot}`` (1) and ``ctloop_serving_ready``;
- ``ctloop_serving_predictions_logged_total`` (acknowledged by the broker),
  ``ctloop_serving_predictions_dropped_total{reason}`` (``queue_full``, ``delivery_failed``),
  ``ctloop_serving_prediction_log_queue`` (waiting now), ``ctloop_serving_prediction_log_connected``;
- ``ctloop_serving_faults_injected_total``: infer calls failed on purpose (``POST /admin/faults``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
AGE_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)


def _in_memory_values() -> None:
    """Keep metric values in this process's memory, whatever imported Feast did.

    Importing ``feast.metrics`` sets ``PROMETHEUS_MULTIPROC_DIR`` (for Feast's pre-forked feature server),
    and a ``prometheus_client`` imported after that stores every value in files keyed by metric name, so
    two metrics of the same name in one process (two apps in a test) share their values. A slot is one
    process with its own registry: plain in-memory values are right for it.
    """
    from prometheus_client import values

    values.ValueClass = values.MutexValue


class ServingMetrics:
    def __init__(self) -> None:
        _in_memory_values()
        self.registry = r = CollectorRegistry()
        self.request_seconds = Histogram("ctloop_serving_request_seconds", "Request latency, by route.", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("ctloop_serving_requests", "Requests answered, by route and HTTP status.",
                                ["route", "status"], registry=r)
        self.errors = Counter("ctloop_serving_errors", "Requests answered with a 4xx or 5xx, by route and status.",
                              ["route", "status"], registry=r)
        self.batch_rows = Histogram("ctloop_serving_batch_rows", "Rows scored by one model call (dynamic batching).",
                                    buckets=ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram("ctloop_serving_batch_requests", "Requests scored by one model call.",
                                        buckets=ROW_BUCKETS, registry=r)
        self.lookup_seconds = Histogram("ctloop_serving_feature_lookup_seconds", "One batched online-feature lookup.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.model_seconds = Histogram("ctloop_serving_model_seconds", "One model call over a batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.feature_age = Histogram("ctloop_serving_feature_age_seconds",
                                     "Now minus the event time of the online feature row served, by feature view.",
                                     ["view"], buckets=AGE_BUCKETS, registry=r)
        self.features_missing = Counter("ctloop_serving_features_missing",
                                        "Rows the online store had no (unexpired) feature row for, by view.",
                                        ["view"], registry=r)
        self.model_info = Gauge("ctloop_serving_model_info", "The model version this slot serves (value 1).",
                                ["pipeline", "model", "version", "alias", "slot"], registry=r)
        self.ready = Gauge("ctloop_serving_ready", "1 once the model and the feature store are loaded.", registry=r)
        self.logged = Counter("ctloop_serving_predictions_logged", "Predictions the broker acknowledged.", registry=r)
        self.dropped = Counter("ctloop_serving_predictions_dropped",
                               "Predictions not logged: queue_full (broker away too long) or delivery_failed.",
                               ["reason"], registry=r)
        self.log_queue = Gauge("ctloop_serving_prediction_log_queue", "Predictions waiting for the broker.",
                               registry=r)
        self.log_connected = Gauge("ctloop_serving_prediction_log_connected",
                                   "1 while the prediction log has a producer connected to the broker.", registry=r)
        self.faults = Counter("ctloop_serving_faults_injected", "Infer calls failed on purpose (/admin/faults).",
                              registry=r)
        for reason in ("queue_full", "delivery_failed"):
            self.dropped.labels(reason)  # present at 0 from the start, so a rate() has a series

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
