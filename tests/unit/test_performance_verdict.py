"""The delayed-label performance verdict on synthetic windows: a stationary champion is not called decayed
because twenty positives happened to rank badly, and a real decay still fails. Pure functions: no lake,
no MLflow (``performance.judge`` is the verdict ``performance.checks`` applies to each cohort and slice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ctloop.config.spec import load_spec
from ctloop.monitoring import performance

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec("fraud", ROOT / "pipelines")
RATE = 0.01  # the fraud rate of every window and of the holdout (PR-AUC moves with prevalence)
# the confidence ``checks`` gives each of its checks (Bonferroni over overall + slices)
CONFIDENCE = 1 - (1 - SPEC.gate.confidence) / (1 + len(SPEC.evaluation.slices))


def window(rng: np.random.Generator, positives: int, separation: float) -> tuple[Any, Any, Any]:
    """``positives`` frauds among ``positives / RATE`` rows, scores from one fixed distribution per class,
    decisions at 0.5."""
    y = np.zeros(round(positives / RATE), dtype="int64")
    y[rng.choice(len(y), positives, replace=False)] = 1
    scores = 1 / (1 + np.exp(-(rng.normal(0.0, 1.0, len(y)) + separation * y - 4.0)))
    return y, scores, (scores >= 0.5).astype("int64")


def holdout(separation: float) -> float:
    """The champion's holdout PR-AUC: the same distribution on a holdout large enough to be exact."""
    y, scores, decisions = window(np.random.default_rng(0), 2000, separation)
    return performance.realized(SPEC, y, scores, decisions)["pr_auc"]


def test_a_stationary_champion_is_not_called_decayed() -> None:
    """20 windows of one fixed score distribution, 20 to 40 positives each: the point estimate alone 'decays'
    past max_decay in about one window in nine (11.5 % of 400 such windows); the verdict reads the bound."""
    reference = holdout(2.2)
    rng = np.random.default_rng(1)
    verdicts, point_decays = [], []
    for _ in range(20):
        y, scores, decisions = window(rng, int(rng.integers(20, 41)), 2.2)  # the small cohorts where noise decides
        check = performance.judge(SPEC, "performance", y, scores, decisions, reference, {}, confidence=CONFIDENCE)
        assert "no verdict" not in check.detail, check.detail
        assert check.evidence["realized_upper"] >= check.evidence["realized"]["pr_auc"]
        assert check.evidence["confidence"] == CONFIDENCE and check.evidence["resamples"] == performance.RESAMPLES
        verdicts.append(check.passed)
        point_decays.append(check.evidence["decay"])
    assert max(point_decays) > SPEC.monitoring.performance.max_decay  # the noise this verdict must not follow
    assert verdicts.count(False) <= 1, point_decays


def test_a_decayed_champion_fails_on_the_same_small_windows() -> None:
    reference = holdout(2.2)
    rng = np.random.default_rng(2)
    for _ in range(5):
        # the fraud pattern moved: positives barely rank above negatives any more
        y, scores, decisions = window(rng, int(rng.integers(20, 41)), 0.8)
        check = performance.judge(SPEC, "performance", y, scores, decisions, reference, {}, confidence=CONFIDENCE)
        assert not check.passed, check.detail
        assert check.evidence["realized_upper"] < reference * (1 - SPEC.monitoring.performance.max_decay)


def test_the_bound_is_reproducible_and_widens_with_confidence() -> None:
    y, scores, decisions = window(np.random.default_rng(3), 30, 2.2)
    low = performance.upper_bound(SPEC, y, scores, decisions, 0.9)
    assert performance.upper_bound(SPEC, y, scores, decisions, 0.9) == low  # seeded: the same verdict again
    assert performance.upper_bound(SPEC, y, scores, decisions, CONFIDENCE) >= low
