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

from ctloop.config.spec import EvaluationSpec, PipelineSpec


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


def score_metrics(y: np.ndarray, p: np.ndarray, evaluation: EvaluationSpec) -> dict[str, float]:
    """Every gate metric of one population; NaN where it is undefined (no positives or no negatives)."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y = np.asarray(y, dtype="int64")
    p = np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    return {
        "pr_auc": float(average_precision_score(y, p)) if both else math.nan,
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "recall_at_precision": recall_at_precision(y, p, evaluation.precision_target) if both else math.nan,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else math.nan,
        "calibration_error": calibration_error(y, p, evaluation.calibration_bins) if len(y) else math.nan,
    }


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
