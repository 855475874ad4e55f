"""Performance with delayed labels: the champion's realized PR-AUC and recall once chargebacks have matured.

The logged predictions (``serving.predictions``) are joined to the label stream (``labels.events``)
by ``labels.join_key``. A prediction counts only once its label window has matured by the
evaluation's "now", the monitored interval's end (never the wall clock, so an old interval can be
judged again and a replay is judged as it happened): a chargeback reported by then makes it positive,
none makes it negative, and an immature one is left out whatever its label (keeping only the
early-reported positives would inflate recall). The rule is the training set's
(``training_set.label_rows``), so a monitored figure and a holdout figure mean the same thing.

Which time matures: the *transaction's* event time, looked up in the landed primary stream by the
join key, since a chargeback's delay runs from the transaction. A prediction's ``served_at`` is the
wall-clock time of serving: equal to the event time in production, days or months later in a replay
(``make demo`` serves January's transactions in December); it is used only for a prediction whose
transaction has not landed. "Now" is capped at the label stream's watermark (landed and cleaned, as
training reads it; in a lake without the lander's manifests, its newest landed label), so a label
stream that lags does not turn frauds into negatives; and only the labels reported by that horizon
count (before the watermark, as training reads them), so maturity and labels share one "now".

The judged cohort: predictions whose transactions matured in the last ``monitoring.performance.window``
(or the monitored interval, if longer) before "now". An hour holds too few frauds for a verdict.

Verdicts, per interval and per evaluation slice (``performance``, ``performance_<slice>``): the
realized ``monitoring.performance.metric`` against the champion's holdout figure (the metrics
``ctloop evaluate`` logged on its training run). A check fails only when the metric's one-sided upper
confidence bound (a stratified bootstrap of the cohort) lies more than ``max_decay`` below the holdout
figure: with 20–40 positives the point estimate alone fails a stationary champion in 10–20 % of
windows. The confidence is ``gate.confidence`` shared among the checks (Bonferroni: each uses
``1 − (1 − confidence) / checks``). Fewer than ``min_positives`` matured positives is no verdict
(passed, said so). Only predictions the current champion served are judged: an older version's decay
is no reason to retrain its successor.
``recall_at_threshold`` is recall at each prediction's logged serving threshold; its holdout figure is
``recall_at_precision``, the recall at the threshold ``ctloop evaluate`` chose for serving.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, duration_seconds
from ctloop.evaluation.metrics import is_nan, metric_value, slice_masks
from ctloop.ingest.manifests import label_watermark
from ctloop.lake.paths import raw_prefix
from ctloop.lake.store import Lake
from ctloop.monitoring.checks import Check
from ctloop.training.training_set import label_rows

HOLDOUT_METRIC = {"pr_auc": "pr_auc", "recall_at_threshold": "recall_at_precision"}
RESAMPLES = 200  # bootstrap resamples behind each verdict's upper bound (seeded: a verdict is reproducible)


def cohort(spec: PipelineSpec, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[from, to)`` of the transaction times judged at ``end``: matured by then, in the last window."""
    span = max(end - start, timedelta(seconds=duration_seconds(spec.monitoring.performance.window)))
    to = end - timedelta(days=spec.labels.maturity_days)
    return to - span, to


def _landed(lake: Lake, spec: PipelineSpec, stream: str, columns: list[str], since: datetime,
            until: datetime | None) -> Any:
    """Landed rows of ``stream`` whose time field is in ``[since, until)`` (pruned by day partition) as pandas."""
    import pandas as pd
    import pyarrow.dataset as ds

    event = spec.events[stream]
    data = lake.dataset(raw_prefix(spec.name, event.topic))
    if data is None:
        return pd.DataFrame(columns=columns)
    t = ds.field(event.time_field)
    cond = (ds.field("event_date") >= f"{since:%Y-%m-%d}") & (t >= since)
    if until is not None:
        cond &= (ds.field("event_date") <= f"{until:%Y-%m-%d}") & (t < until)
    return data.to_table(columns=columns, filter=cond).to_pandas()


def matured_predictions(spec: PipelineSpec, lake: Lake, start: datetime, end: datetime) -> tuple[Any, dict[str, Any]]:
    """The cohort's predictions with their label (``spec.labels.target``) and request fields; and what was left out."""
    import pandas as pd

    if spec.serving.predictions is None:
        raise ValueError(f"pipeline {spec.name!r}: serving.predictions is not set: no prediction log to judge")
    log, primary, labels = (spec.events[spec.serving.predictions], spec.events[spec.primary],
                            spec.events[spec.labels.events])
    join, target = spec.labels.join_key, spec.labels.target
    if join not in log.fields:
        raise ValueError(f"pipeline {spec.name!r}: events.{spec.serving.predictions} has no {join!r} "
                         "(labels.join_key): predictions cannot be joined to labels")
    since, until = cohort(spec, start, end)
    # a replay serves old transactions late: predictions are read from the cohort's start with no end
    preds = _landed(lake, spec, spec.serving.predictions, [log.id_field, log.time_field, join, "score", "threshold",
                                                           "decision", "model_version", "features"], since, None)
    preds = preds.drop_duplicates(log.id_field).sort_values(log.time_field).drop_duplicates(join, keep="first")
    txns = _landed(lake, spec, spec.primary, [primary.id_field, primary.time_field], since, end)
    times = txns.drop_duplicates(primary.id_field).set_index(primary.id_field)[primary.time_field]
    preds["event_timestamp"] = preds[join].map(times).fillna(preds[log.time_field])
    preds = preds[(preds["event_timestamp"] >= since) & (preds["event_timestamp"] < end)]
    # labels count up to the horizon that maturity is measured against: the watermark read first, so a
    # chargeback landed after it (but before ``end``) cannot make a prediction positive that training would not
    watermark = label_watermark(lake, spec)
    reported = _landed(lake, spec, spec.labels.events, [join, labels.time_field], since,
                       min(end, watermark) if watermark is not None else end)
    newest = reported[labels.time_field].max().to_pydatetime() if len(reported) else None
    known = watermark or newest  # the lander's record; a lake without manifests: the newest label
    horizon = min(end, known) if known is not None else None
    rows, immature = label_rows(preds, pd.Index(reported[join].unique()), join=join, target=target,
                                horizon=horizon, maturity_days=spec.labels.maturity_days)
    rows = rows.reset_index(drop=True)
    fields = pd.DataFrame([json.loads(f) if isinstance(f, str) and f else {} for f in rows["features"]],
                          index=rows.index)
    rows = rows.join(fields[[c for c in fields.columns if c not in rows.columns]])
    return rows, {"cohort": [since.isoformat(), until.isoformat()], "immature_left_out": immature,
                  "labels_known_until": horizon.isoformat() if horizon else None}


def _figure(metric: str, y: Any, scores: Any, decisions: Any, spec: PipelineSpec) -> float:
    """``metric`` of one population (labels, scores and decisions as numpy arrays); NaN where undefined."""
    if metric == "pr_auc":
        return metric_value("pr_auc", y, scores, spec.evaluation)
    positives = int(y.sum())
    return int((y * decisions).sum()) / positives if positives else float("nan")


def _arrays(y: Any, scores: Any, decisions: Any) -> tuple[Any, Any, Any]:
    import numpy as np

    return (np.asarray(y, dtype="int64"), np.asarray(scores, dtype="float64"),
            np.asarray(decisions, dtype="int64"))


def realized(spec: PipelineSpec, y: Any, scores: Any, decisions: Any) -> dict[str, Any]:
    """Realized figures of one population: PR-AUC, recall and precision at the serving threshold."""
    y, scores, decisions = _arrays(y, scores, decisions)
    flagged, hits = int(decisions.sum()), int((y * decisions).sum())
    return {"pr_auc": _figure("pr_auc", y, scores, decisions, spec),
            "recall_at_threshold": _figure("recall_at_threshold", y, scores, decisions, spec),
            "precision_at_threshold": hits / flagged if flagged else float("nan"),
            "rows": len(y), "positives": int(y.sum())}


def upper_bound(spec: PipelineSpec, y: Any, scores: Any, decisions: Any, confidence: float, *,
                resamples: int = RESAMPLES, seed: int = 0) -> float:
    """One-sided upper ``confidence`` bound of the realized metric, by a stratified bootstrap of the population.

    Positives and negatives are resampled separately, each to its own count, so every resample has the
    cohort's positives and prevalence (PR-AUC moves with prevalence) and only which rows were drawn varies.
    Twenty positives make a PR-AUC that swings by a third between stationary windows: the verdict reads
    this bound, not the point estimate. (``metrics.paired_bootstrap`` compares two models on shared rows,
    two-sided and unstratified; this judges one model against a fixed figure.)
    """
    import numpy as np

    y, scores, decisions = _arrays(y, scores, decisions)
    metric = spec.monitoring.performance.metric
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = []
    for _ in range(resamples):
        idx = np.concatenate([pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]])
        value = _figure(metric, y[idx], scores[idx], decisions[idx], spec)
        if not is_nan(value):
            values.append(value)
    return float(np.quantile(values, confidence)) if values else float("nan")


def champion_holdout(spec: PipelineSpec, settings: Settings) -> tuple[str | None, dict[str, float]]:
    """The champion's version and the holdout metrics ``ctloop evaluate`` logged on its run (``eval.candidate.*``)."""
    from ctloop.registry.aliases import client, current_version

    mlflow_client = client(settings)
    version = current_version(mlflow_client, spec.registered_model, "champion")
    if version is None:
        return None, {}
    return version, holdout_metrics(settings, mlflow_client.get_model_version(spec.registered_model, version).run_id)


def holdout_metrics(settings: Settings, run_id: str | None) -> dict[str, float]:
    """The holdout metrics ``ctloop evaluate`` logged on a version's run (``eval.candidate.*``, prefix dropped)."""
    from ctloop.registry.aliases import client

    prefix = "eval.candidate."
    metrics = client(settings).get_run(run_id).data.metrics if run_id else {}
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}


def judge(spec: PipelineSpec, name: str, y: Any, scores: Any, decisions: Any, holdout: float | None,
          evidence: dict[str, Any], *, confidence: float) -> Check:
    """One verdict on a population (labels, scores, decisions): no verdict below ``min_positives``, else failed
    when even the metric's upper ``confidence`` bound lies more than ``max_decay`` below the holdout figure."""
    perf = spec.monitoring.performance
    figures = realized(spec, y, scores, decisions)
    metric, value = perf.metric, figures[perf.metric]
    evidence = {**evidence, "realized": figures, "holdout": {metric: holdout}, "metric": metric,
                "max_decay": perf.max_decay}
    if figures["positives"] < perf.min_positives:
        return Check(name, True, f"no verdict: {figures['positives']} matured positives in {figures['rows']:,} "
                                 f"predictions, {perf.min_positives} needed", evidence)
    if holdout is None or is_nan(value) or not holdout:
        return Check(name, True, f"no verdict: no champion holdout {HOLDOUT_METRIC[metric]} to compare "
                                 f"realized {metric} {value:.4f} with", evidence)
    upper = upper_bound(spec, y, scores, decisions, confidence)
    floor = holdout * (1 - perf.max_decay)
    evidence.update(decay=(holdout - value) / holdout, realized_upper=upper, confidence=confidence,
                    resamples=RESAMPLES)
    line = (f"realized {metric} {value:.4f} vs champion holdout {holdout:.4f}: decay {evidence['decay']:+.1%} "
            f"over {figures['rows']:,} matured predictions, {figures['positives']} positives; its {confidence:.2%} "
            f"upper bound {upper:.4f} must reach {floor:.4f} (holdout less {perf.max_decay:.0%})")
    return Check(name, is_nan(upper) or upper >= floor, line, evidence)


def checks(spec: PipelineSpec, settings: Settings, lake: Lake, start: datetime, end: datetime, *,
           champion: tuple[str | None, dict[str, float]] | None = None) -> list[Check]:
    """``performance`` and ``performance_<slice>`` for the interval ``[start, end)`` judged at ``end``.

    ``champion`` is ``(version, holdout metrics)``; read from MLflow when not given. A pipeline that logs
    no predictions (``serving.predictions: null``) has nothing to judge: no checks.
    """
    if spec.serving.predictions is None:
        return []
    version, holdout = champion if champion is not None else champion_holdout(spec, settings)
    rows, context = matured_predictions(spec, lake, start, end)
    served = rows["model_version"].astype("string").value_counts().to_dict()
    if version is not None:
        rows = rows[rows["model_version"].astype("string") == version].reset_index(drop=True)
    evidence = {**context, "interval": [start.isoformat(), end.isoformat()], "champion_version": version,
                "predictions_by_version": {str(k): int(v) for k, v in served.items()}}
    key = HOLDOUT_METRIC[spec.monitoring.performance.metric]
    target = spec.labels.target
    cuts = spec.evaluation.slices
    # Bonferroni across the overall and per-slice checks: a stationary champion fails none of them at the
    # gate's confidence, not each of them
    confidence = 1 - (1 - spec.gate.confidence) / (1 + len(cuts))
    out = [judge(spec, "performance", rows[target], rows["score"], rows["decision"], holdout.get(key), evidence,
                 confidence=confidence)]
    masks = slice_masks(spec, rows) if len(rows) else {cut.name: [] for cut in cuts}
    for cut in cuts:
        part = rows[masks[cut.name]] if len(rows) else rows
        slice_evidence = {**evidence, "slices": [cut.model_dump(exclude_none=True)]}
        out.append(judge(spec, f"performance_{cut.name}", part[target], part["score"], part["decision"],
                         holdout.get(f"slice.{cut.name}.{key}"), slice_evidence, confidence=confidence))
    return out
