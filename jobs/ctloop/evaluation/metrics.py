"""Fraud metrics: pure functions of labels and scores, tested without a model or a server.

Fraud is rare, so accuracy says nothing: the gate reads ranking quality on the positives (PR-AUC,
recall at a precision the investigators can afford), overall ranking (ROC-AUC) and whether scores
mean probabilities (log loss, expected calibration error), overall and per slice. The gate that
reads them is ``ctloop.evaluation.gate``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ctloop.config.spec import LOWER_IS_BETTER, METRICS, EvaluationSpec, PipelineSpec


def recall_at_precision(y: np.ndarray, p: np.ndarray, precision: float) -> float:
    """Highest recall among thresholds whose precision is at least ``precision`` (0 when none is)."""
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, p)
    ok = prec >= precision
    return float(rec[ok].max()) if ok.any() else 0.0


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Expected calibration error: |mean score − positive rate| per equal-width bin, weighted by its rows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(y))


def metric_value(metric: str, y: np.ndarray, p: np.ndarray, evaluation: EvaluationSpec) -> float:
    """One gate metric of one population; NaN where it is undefined (no positives or no negatives)."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    both = 0 < y.sum() < len(y)
    if metric == "pr_auc":
        return float(average_precision_score(y, p)) if both else math.nan
    if metric == "roc_auc":
        return float(roc_auc_score(y, p)) if both else math.nan
    if metric == "recall_at_precision":
        return recall_at_precision(y, p, evaluation.precision_target) if both else math.nan
    if metric == "log_loss":
        return float(log_loss(y, p, labels=[0, 1])) if len(y) else math.nan
    if metric == "calibration_error":
        return calibration_error(y, p, evaluation.calibration_bins) if len(y) else math.nan
    raise ValueError(f"unknown metric {metric!r}")


def _prepared(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(y, dtype="int64"), np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)


def score_metrics(y: np.ndarray, p: np.ndarray, evaluation: EvaluationSpec) -> dict[str, float]:
    """Every gate metric of one population; NaN where it is undefined (no positives or no negatives)."""
    y, p = _prepared(y, p)
    return {m: metric_value(m, y, p, evaluation) for m in METRICS}


def better_by(metric: str, candidate: float, reference: float) -> float:
    """How much better the candidate is, in the metric's better direction (negative: worse)."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference


def paired_bootstrap(metric: str, y: Any, candidate: Any, champion: Any, evaluation: EvaluationSpec, *,
                     samples: int, confidence: float, seed: int = 0) -> dict[str, float]:
    """The candidate's improvement over the champion with a confidence interval, by resampling holdout rows.

    Paired: each resample scores both models on the same rows, so what the rows have in common (a hard
    week, a rare merchant) cancels out and only the models' difference varies. A point estimate on a few
    days of holdout lets noise decide; the gate reads the interval's lower bound instead.
    """
    y, cand = _prepared(y, candidate)
    _, champ = _prepared(y, champion)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(samples):
        idx = rng.integers(0, len(y), len(y))
        gain = better_by(metric, metric_value(metric, y[idx], cand[idx], evaluation),
                         metric_value(metric, y[idx], champ[idx], evaluation))
        if not is_nan(gain):
            gains.append(gain)
    point = better_by(metric, metric_value(metric, y, cand, evaluation), metric_value(metric, y, champ, evaluation))
    if not gains:
        return {"point": point, "low": math.nan, "high": math.nan, "confidence": confidence, "samples": 0}
    tail = (1 - confidence) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    return {"point": point, "low": float(low), "high": float(high), "confidence": confidence, "samples": len(gains)}


def slice_masks(spec: PipelineSpec, frame: Any) -> dict[str, np.ndarray]:
    masks = {}
    for cut in spec.evaluation.slices:
        column = frame[cut.field]
        if cut.equals is not None:
            mask = column.astype("string") == cut.equals
        else:
            mask = column.notna()
            if cut.min is not None:
                mask &= column >= cut.min
            if cut.max is not None:
                mask &= column < cut.max
        masks[cut.name] = mask.fillna(False).to_numpy(dtype=bool)
    return masks


def metric_table(spec: PipelineSpec, frame: Any, scores: np.ndarray) -> dict[str, Any]:
    """Metrics overall and per declared slice, with the rows and positives behind each."""
    y = frame[spec.labels.target].to_numpy(dtype="int64")
    table: dict[str, Any] = {"overall": {**score_metrics(y, scores, spec.evaluation),
                                         "rows": len(y), "positives": int(y.sum())}, "slices": {}}
    for name, mask in slice_masks(spec, frame).items():
        table["slices"][name] = {**score_metrics(y[mask], scores[mask], spec.evaluation),
                                 "rows": int(mask.sum()), "positives": int(y[mask].sum())}
    return table


def flat_metrics(table: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix.pr_auc: …, prefix.slice.online.pr_auc: …}`` for MLflow (undefined values left out)."""
    out = {f"{prefix}.{k}": v for k, v in table["overall"].items() if not is_nan(v)}
    for name, row in table["slices"].items():
        out.update({f"{prefix}.slice.{name}.{k}": v for k, v in row.items() if not is_nan(v)})
    return out


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)
