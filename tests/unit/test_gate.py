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


def test_without_a_champion_the_floors_decide_only_when_the_spec_says_so() -> None:
    gate = GateSpec(floors={"pr_auc": 0.3, "log_loss": 0.2}, min_improvement={"pr_auc": 0.0}, first_model="floors")
    ok = decide(gate, EVAL, _table(0.35), None)
    assert ok["passed"] and ok["basis"] == "floors only (no champion)"
    assert [c["check"] for c in ok["checks"]] == ["floor.pr_auc", "floor.log_loss", "first_model"]
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


def test_without_a_champion_the_default_refuses_and_says_which_setting_allows_it() -> None:
    refused = decide(GateSpec(floors={"pr_auc": 0.3}), EVAL, _table(0.9), None)
    assert not refused["passed"]
    assert refused["reasons"] == ["first_model: no champion to compare with: refused (gate.first_model: refuse); "
                                  "promote a first model by hand or set gate.first_model: floors"]


def test_a_gate_that_checks_nothing_refuses() -> None:
    """`all([])` is True: an empty gate used to pass everything."""
    empty = decide(GateSpec(), EVAL, _table(0.1), _table(0.9))  # a champion, but no floor, improvement or slice
    assert not empty["passed"]
    assert empty["reasons"] == ["something_checked: the gate checked nothing: set gate.floors or "
                                "gate.min_improvement"]
    thin = decide(GateSpec(), EVAL, _table(0.1, slices={"rare": (0.1, 2)}), _table(0.9, slices={"rare": (0.9, 2)}))
    assert not thin["passed"], "slices too thin to gate are not a check"


def test_first_model_on_floors_needs_floors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="first_model: 'floors' needs gate.floors"):
        GateSpec(first_model="floors")


def test_a_champion_that_cannot_score_refuses_unless_the_spec_opts_in() -> None:
    error = "champion v3 could not score the holdout (missing column)"
    strict = decide(GateSpec(floors={"pr_auc": 0.3}), EVAL, _table(0.9), None, champion_error=error)
    assert not strict["passed"] and strict["basis"] == "floors only (the champion could not be scored)"
    assert strict["reasons"][0].startswith("champion: champion v3 could not score the holdout (missing column); "
                                           "refused (gate.champion_unscorable: refuse)")
    lenient = GateSpec(floors={"pr_auc": 0.3}, champion_unscorable="floors")
    assert decide(lenient, EVAL, _table(0.9), None, champion_error=error)["passed"]
    assert not decide(lenient, EVAL, _table(0.2), None, champion_error=error)["passed"]


def _scores(seed: int, n: int = 4000, rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    return y, np.clip(0.3 * y + rng.normal(0.3, 0.15, n), 0, 1)


def test_noise_does_not_earn_a_promotion_but_a_real_gain_does() -> None:
    """Two models of equal skill differ by noise on a finite holdout: the point estimate may favour the
    candidate, the interval's lower bound must not. A genuinely better model clears it."""
    from ctloop.evaluation.metrics import paired_bootstrap

    y, champion = _scores(1)
    rng = np.random.default_rng(2)
    noisy = np.clip(0.3 * y + rng.normal(0.3, 0.15, len(y)), 0, 1)  # same skill, other noise
    better = np.clip(0.6 * y + rng.normal(0.3, 0.15, len(y)), 0, 1)
    gate = GateSpec(min_improvement={"pr_auc": 0.0}, bootstrap_samples=300)
    same = paired_bootstrap("pr_auc", y, noisy, champion, EVAL, samples=300, confidence=0.95)
    assert same["low"] < 0 < same["high"], same
    verdict = decide(gate, EVAL, _table(0.5 + max(same["point"], 0.001)), _table(0.5), improvement={"pr_auc": same})
    assert not verdict["passed"], "a point gain inside the noise must not pass"
    assert "95% interval [" in verdict["reasons"][0] and "lower bound must be at least +0.0" in verdict["reasons"][0]
    real = paired_bootstrap("pr_auc", y, better, champion, EVAL, samples=300, confidence=0.95)
    assert real["low"] > 0.05, real
    assert decide(gate, EVAL, _table(0.8), _table(0.5), improvement={"pr_auc": real})["passed"]
    assert decide(gate, EVAL, _table(0.8), _table(0.5), improvement={"pr_auc": real})["improvement"] == {"pr_auc": real}


def test_the_bootstrap_is_paired_and_respects_the_metric_direction() -> None:
    from ctloop.evaluation.metrics import paired_bootstrap

    y, champion = _scores(3)
    identical = paired_bootstrap("pr_auc", y, champion, champion, EVAL, samples=100, confidence=0.9)
    assert identical["low"] == identical["high"] == identical["point"] == 0.0, "paired: same rows, no spread"
    worse_calibrated = np.clip(champion + 0.2, 0, 1)
    loss = paired_bootstrap("log_loss", y, worse_calibrated, champion, EVAL, samples=100, confidence=0.9)
    assert loss["high"] < 0, "a higher log loss is a negative gain"


def test_notes_travel_with_the_decision() -> None:
    note = "champion v2 trained on 1,200 of the 3,000 holdout rows: its score here is optimistic"
    verdict = decide(GateSpec(floors={"pr_auc": 0.3}), EVAL, _table(0.4), _table(0.35), notes=[note])
    assert verdict["passed"] and verdict["reasons"][-1] == note
