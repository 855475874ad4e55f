"""Fraud metrics and the gate policy, on hand-made scores whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ctloop.config.spec import EvaluationSpec, GateSpec
from ctloop.evaluation.gate import decide
from ctloop.evaluation.metrics import calibration_error, recall_at_precision, score_metrics

EVAL = EvaluationSpec(min_slice_positives=5)


def _table(pr_auc: float, log_loss: float = 0.1, slices: dict[str, tuple[float, int]] | None = None) -> dict:
    row = {"pr_auc": pr_auc, "roc_auc": 0.9, "recall_at_precision": 0.5, "log_loss": log_loss,
           "calibration_error": 0.01, "rows": 1000, "positives": 50}
    return {"overall": row, "slices": {name: {**row, "pr_auc": v, "positives": n}
                                       for name, (v, n) in (slices or {}).items()}}


def test_recall_at_precision_and_calibration_error_on_known_scores() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.05])
    assert recall_at_precision(y, p, 1.0) == pytest.approx(2 / 3)  # the top two are both fraud
    assert recall_at_precision(y, p, 0.75) == pytest.approx(1.0)  # 3 of the top 4
    assert calibration_error(np.array([0, 1]), np.array([0.0, 1.0]), 10) == 0.0
    assert calibration_error(np.array([0, 0]), np.array([0.3, 0.3]), 10) == pytest.approx(0.3)


def test_metrics_are_undefined_not_invented_without_positives() -> None:
    m = score_metrics(np.zeros(10), np.full(10, 0.1), EVAL)
    assert math.isnan(m["pr_auc"]) and math.isnan(m["roc_auc"])
    assert m["log_loss"] == pytest.approx(-math.log(0.9), rel=1e-6)


def test_without_a_champion_the_floors_alone_decide() -> None:
    gate = GateSpec(floors={"pr_auc": 0.3, "log_loss": 0.2}, min_improvement={"pr_auc": 0.0})
    ok = decide(gate, EVAL, _table(0.35), None)
    assert ok["passed"] and ok["basis"] == "floors only (no champion)"
    assert [c["check"] for c in ok["checks"]] == ["floor.pr_auc", "floor.log_loss"]
    low = decide(gate, EVAL, _table(0.25), None)
    assert not low["passed"] and low["reasons"] == ["floor.pr_auc: pr_auc 0.2500 >= 0.3 required"]
    # lower is better for log loss: the floor is a ceiling
    assert not decide(gate, EVAL, _table(0.35, log_loss=0.25), None)["passed"]


def test_a_candidate_must_beat_the_champion_by_the_minimum_improvement() -> None:
    gate = GateSpec(min_improvement={"pr_auc": 0.01, "log_loss": 0.0})
    assert decide(gate, EVAL, _table(0.52, log_loss=0.09), _table(0.50))["passed"]
    worse = decide(gate, EVAL, _table(0.505, log_loss=0.09), _table(0.50))
    assert not worse["passed"]
    assert worse["reasons"] == ["improvement.pr_auc: pr_auc 0.5050 vs champion 0.5000: gain +0.0050, "
                                "at least +0.01 required"]
    # a higher log loss is a loss, whatever the sign convention
    assert not decide(gate, EVAL, _table(0.52, log_loss=0.11), _table(0.50))["passed"]


def test_a_slice_regression_beyond_the_limit_refuses_but_thin_slices_are_not_gated() -> None:
    gate = GateSpec(max_slice_regression=0.05)
    champion = _table(0.5, slices={"online": (0.60, 40), "rare": (0.9, 3)})
    fine = decide(gate, EVAL, _table(0.5, slices={"online": (0.56, 40), "rare": (0.1, 3)}), champion)
    assert fine["passed"]
    assert "not gated: 3 positives" in next(c["detail"] for c in fine["checks"] if c["check"] == "slice.rare")
    bad = decide(gate, EVAL, _table(0.5, slices={"online": (0.50, 40), "rare": (0.9, 3)}), champion)
    assert not bad["passed"] and bad["reasons"][0].startswith("slice.online: pr_auc 0.5000 vs champion 0.6000")
