"""``ctloop monitor``: judge one landed interval with every check, and keep what was found where people look.

Drift (``monitoring.drift``) against the reference (``monitoring.reference``: the champion's training
snapshot unless another is named), data quality of the landed streams (``monitoring.quality``, Great
Expectations) and realized performance on matured labels (``monitoring.performance``). What it keeps:

* the result, ``{"checks", "interval", "reference", "reports"}``, and the drift reports (Evidently HTML)
  under ``monitor_prefix`` in the lake; the quality checks link their Data Docs;
* the drift reports logged to the MLflow run of the model they judge (the champion version's run), under
  ``monitoring/<interval>/``;
* the key figures for Prometheus: pushed to ``CTLOOP_PUSHGATEWAY_URL`` (the kubernetes runtime), always
  written as ``metrics.prom`` (text exposition) beside the reports, and the newest interval's also under
  ``monitor_latest_metrics``, which the local stack serves on ``GET /metrics`` of its serving port.

Any interval that has landed data can be judged, old or new, and a rerun rewrites the same objects.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.lake.paths import monitor_latest_metrics, monitor_prefix
from ctloop.lake.store import Lake
from ctloop.monitoring import drift, performance, quality
from ctloop.monitoring.checks import Check
from ctloop.monitoring.reference import Reference, resolve


def monitor(spec: PipelineSpec, settings: Settings, lake: Lake, start: datetime, end: datetime,
            reference: str | None = None) -> dict[str, Any]:
    """Every check of [start, end) judged against ``reference`` (a snapshot id; default: the champion's)."""
    prefix = monitor_prefix(spec.name, start, end)
    # quality first: it needs no registry (a block it finds stands even when MLflow is away and the run fails
    # below), and it reports landed data the other checks cannot read (as a failure; they say "no verdict")
    checks: list[Check] = quality.checks(spec, settings, lake, start, end)
    found = resolve(spec, settings, lake, reference)
    reports: dict[str, str] = {}
    html: dict[str, str] = {}

    def publish(name: str, page: str) -> str:
        path = f"{prefix}/{name}.html"
        lake.write(path, page.encode())
        reports[name], html[name] = lake.url(path), page
        return reports[name]

    ref = found if isinstance(found, Reference) else None
    checks += drift.checks(
        spec, lake, start, end, ref.frame if ref else found, version=ref.version if ref else None,
        reference_scores=lambda: ref.scores(spec, settings, lake) if ref else None, publish=publish)
    if spec.serving.predictions is not None:
        try:
            # the champion drift judged (one registry read for both checks), else performance looks it up
            champion = (ref.version, performance.holdout_metrics(settings, ref.run_id)) if ref and ref.version else None
            checks += performance.checks(spec, settings, lake, start, end, champion=champion)
        except ValueError as exc:
            checks.append(Check("performance", True, f"no verdict: {exc}", {"interval": [start.isoformat(),
                                                                                       end.isoformat()]}))
    result = {"pipeline": spec.name, "checks": [c.to_json() for c in checks],
              "interval": {"start": start.isoformat(), "end": end.isoformat()},
              "reference": ref.describe() if ref else {"none": found}, "reports": reports}
    if ref is not None and ref.run_id and html:
        result["reports"]["mlflow_run"] = _log_to_mlflow(settings, ref, html, start, end)
    result["metrics"] = publish_metrics(spec, settings, lake, prefix, checks, end)
    lake.write(f"{prefix}/result.json", json.dumps(result, indent=1, default=str).encode())
    result["result"] = lake.url(f"{prefix}/result.json")
    failed = [c.name for c in checks if not c.passed]
    print(f"[monitor] {spec.name} [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}): {len(checks)} checks, "
          f"{'failed: ' + ', '.join(failed) if failed else 'all passed'}", file=sys.stderr, flush=True)
    return result


def _newest_judged(lake: Lake, pipeline: str) -> float:
    """End (epoch seconds) of the interval whose figures ``monitor_latest_metrics`` holds; 0 when none."""
    import re

    path = monitor_latest_metrics(pipeline)
    if not lake.exists(path):
        return 0.0
    text = lake.read(path).decode()
    found = re.search(r"^ctloop_monitor_interval_end_timestamp_seconds\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _log_to_mlflow(settings: Settings, ref: Reference, html: dict[str, str], start: datetime, end: datetime) -> str:
    """The drift reports as artifacts of the judged model's training run; the run's id."""
    from ctloop.registry.aliases import client

    mlflow_client = client(settings)
    folder = f"monitoring/{start:%Y%m%dT%H}-{end:%Y%m%dT%H}"
    for name, page in html.items():
        mlflow_client.log_text(ref.run_id, page, f"{folder}/{name}.html")
    return f"{ref.run_id}:{folder}"


def publish_metrics(spec: PipelineSpec, settings: Settings, lake: Lake, prefix: str, checks: list[Check],
             end: datetime) -> str:
    """Key figures as Prometheus gauges: pushed when a Pushgateway is set, always kept as ``metrics.prom``."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

    registry = CollectorRegistry()
    labels = ["pipeline"]
    passed = Gauge("ctloop_monitor_check_passed", "1 if the check passed (a no-verdict passes), 0 if it failed.",
                   [*labels, "check"], registry=registry)
    share = Gauge("ctloop_drift_share", "Share of the judged model inputs that drifted.", labels, registry=registry)
    effect = Gauge("ctloop_drift_effect_size", "Each judged column's effect size (PSI, normed Wasserstein, JS).",
                   [*labels, "column", "measure"], registry=registry)
    judged = Gauge("ctloop_monitor_interval_end_timestamp_seconds", "End of the last judged interval.", labels,
                   registry=registry)
    for check in checks:
        passed.labels(spec.name, check.name).set(1 if check.passed else 0)
        if check.name in ("drift_features", "drift_predictions"):
            if check.name == "drift_features" and "share" in check.evidence:
                share.labels(spec.name).set(check.evidence["share"])
            for column in check.evidence.get("columns", []):
                effect.labels(spec.name, column["column"], column["measure"]).set(column["effect"])
    judged.labels(spec.name).set(end.timestamp())
    exposition = generate_latest(registry)
    lake.write(f"{prefix}/metrics.prom", exposition)
    if _newest_judged(lake, spec.name) <= end.timestamp():  # a re-run of an old interval does not go back in time
        lake.write(monitor_latest_metrics(spec.name), exposition)
    if settings.pushgateway_url:
        try:
            push_to_gateway(settings.pushgateway_url, job="ctloop-monitor", grouping_key={"pipeline": spec.name},
                            registry=registry, timeout=10)
            return settings.pushgateway_url
        except OSError as exc:  # the checks stand without their figures: say so, keep the file
            print(f"[monitor] could not push to the Pushgateway {settings.pushgateway_url}: {exc}; the figures "
                  f"are in {lake.url(f'{prefix}/metrics.prom')}", file=sys.stderr, flush=True)
    return lake.url(f"{prefix}/metrics.prom")
