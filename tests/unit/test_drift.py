"""The drift statistics on synthetic frames: a shifted input is flagged, a stationary stream is not, at any
volume (the effect-size floor), the correction and the floor each do their part, and too little data gives
no verdict. Pure functions: no lake, no Evidently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ctloop.config.spec import DriftSpec, load_spec
from ctloop.monitoring.drift import correct, drift_slices, input_columns, judge, verdict

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec("fraud", ROOT / "pipelines")
KINDS = input_columns(SPEC)
CATEGORIES = {"merchant_category": ["grocery", "fuel", "restaurants", "travel", "electronics"],
              "channel": ["pos", "online", "atm"], "country": ["DE", "FR", "GB", "US", "NL", "ES", "IT"]}


def stream(rows: int, seed: int, *, amount_scale: float = 1.0, online_share: float = 0.2) -> pd.DataFrame:
    """Rows shaped like the fraud pipeline's model inputs: heavy-tailed money, counts with ties, categories."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for name, kind in KINDS.items():
        if kind == "category":
            values = CATEGORIES[name]
            weights = np.linspace(2, 1, len(values))
            if name == "channel":
                weights = np.array([0.75 - online_share, online_share, 0.05]) / 0.8
            data[name] = rng.choice(values, size=rows, p=weights / weights.sum())
        elif "count" in name:
            data[name] = rng.poisson(3, size=rows).astype("float64")
        else:
            data[name] = rng.lognormal(3, 1, size=rows)
    frame = pd.DataFrame(data)
    frame["amount"] *= amount_scale
    frame.loc[rng.random(rows) < 0.03, "card_spend_7d"] = np.nan  # Feast found no row for some entities
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return stream(100_000, seed=1)


def test_a_shifted_input_is_flagged_and_named(reference: pd.DataFrame) -> None:
    drift = SPEC.monitoring.drift
    judged = judge(drift, KINDS, reference, stream(2_000, seed=2, amount_scale=1.7, online_share=0.45))
    passed, detail = verdict(drift, judged, "inputs")
    assert not passed
    assert {c.column for c in judged.drifted} == {"amount", "channel"}, detail
    amount = next(c for c in judged.drifted if c.column == "amount")
    assert amount.test == "ks" and amount.measure == "wasserstein" and amount.effect >= drift.effect_size_floor
    assert amount.p_corrected < drift.alpha and amount.n_current == 2_000 and amount.n_reference == 50_000
    channel = next(c for c in judged.drifted if c.column == "channel")
    assert channel.test == "chisquare" and channel.measure == "jensenshannon"
    assert detail.startswith("2 of 14 inputs drifted: ")


def test_drifted_event_fields_become_slices_the_retrained_model_is_gated_on(reference: pd.DataFrame) -> None:
    """Where the stream moved: online grew, amounts went up; both are fields of the event, so both become slices
    (evaluation accepts them as they are); a drifted aggregate feature is no event field and gives none."""
    from ctloop.config.spec import SliceSpec

    current = stream(2_000, seed=2, amount_scale=1.7, online_share=0.45)
    current["card_spend_7d"] = current["card_spend_7d"] * 3
    judged = judge(SPEC.monitoring.drift, KINDS, reference, current)
    assert {c.column for c in judged.drifted} == {"amount", "channel", "card_spend_7d"}
    slices = {s["name"]: s for s in drift_slices(SPEC, judged, reference, current)}
    assert set(slices) == {"drift_channel_online", "drift_amount_high"}
    assert slices["drift_channel_online"] == {"name": "drift_channel_online", "field": "channel", "equals": "online"}
    assert slices["drift_amount_high"]["min"] == pytest.approx(np.quantile(reference["amount"], 0.9), rel=0.05)
    for cut in slices.values():
        SliceSpec.model_validate(cut)


@pytest.mark.parametrize("rows", [1_000, 100_000])
def test_a_stationary_stream_raises_no_alarm_over_20_windows(reference: pd.DataFrame, rows: int) -> None:
    """20 consecutive windows drawn from the reference's distribution, at 1k and at 100k rows each. At 100k the
    raw p-values of a few columns do fall below alpha now and then (that is what a test does over 280 tries); the
    effect floor is what keeps the verdict quiet as volume grows."""
    drift = SPEC.monitoring.drift
    for window in range(20):
        judged = judge(drift, KINDS, reference, stream(rows, seed=100 + window))
        passed, detail = verdict(drift, judged, "inputs")
        assert passed and not judged.drifted, f"window {window}: {detail}"
        assert len(judged.columns) == len(KINDS)


def test_with_no_effect_floor_volume_alone_makes_a_tiny_shift_drift(reference: pd.DataFrame) -> None:
    """An 8 % amount shift: real but immaterial. At 100k rows the test is sure of it (p tiny); the floor says it is
    too small to matter; without the floor it would alarm."""
    shifted = stream(100_000, seed=3, amount_scale=1.08)
    drift = SPEC.monitoring.drift
    judged = judge(drift, KINDS, reference, shifted)
    amount = next(c for c in judged.columns if c.column == "amount")
    assert amount.p_corrected < drift.alpha and amount.effect < drift.effect_size_floor and not amount.drifted
    unfloored = judge(drift.model_copy(update={"effect_size_floor": 0.0}), KINDS, reference, shifted)
    assert "amount" in {c.column for c in unfloored.drifted}


def test_corrections() -> None:
    p = [0.001, 0.01, 0.02, 0.5]
    assert correct(p, "none") == p
    assert correct(p, "bonferroni") == pytest.approx([0.004, 0.04, 0.08, 1.0])
    assert correct(p, "benjamini_hochberg") == pytest.approx([0.004, 0.02, 0.02 * 4 / 3, 0.5])
    assert correct([], "bonferroni") == []


def test_the_correction_keeps_a_borderline_column_from_drifting(reference: pd.DataFrame) -> None:
    """A shift whose raw p-value clears alpha but not once corrected over 14 columns (Bonferroni)."""
    current = stream(1_500, seed=5, amount_scale=1.1)
    loose = DriftSpec(correction="none", effect_size_floor=0.0, alpha=0.01)
    raw = next(c for c in judge(loose, KINDS, reference, current).columns if c.column == "amount")
    assert raw.p_value < 0.01 and raw.drifted
    strict = judge(loose.model_copy(update={"correction": "bonferroni"}), KINDS, reference, current)
    amount = next(c for c in strict.columns if c.column == "amount")
    assert amount.p_corrected == pytest.approx(min(1.0, raw.p_value * len(KINDS)))
    assert amount.p_corrected > 0.01 and not amount.drifted


def test_too_few_rows_is_no_verdict_and_passes(reference: pd.DataFrame) -> None:
    drift = SPEC.monitoring.drift
    judged = judge(drift, KINDS, reference, stream(drift.min_samples - 1, seed=6, amount_scale=3))
    assert judged.no_verdict and not judged.columns
    assert verdict(drift, judged, "inputs") == (True, f"no verdict: only {drift.min_samples - 1:,} rows in the "
                                                      f"interval (monitoring.drift.min_samples {drift.min_samples:,})")
    sparse = stream(2_000, seed=7)
    sparse.loc[100:, "card_spend_7d"] = np.nan  # one column mostly missing: that column alone is not judged
    judged = judge(drift, KINDS, reference, sparse)
    assert "card_spend_7d" in judged.skipped and len(judged.columns) == len(KINDS) - 1


@pytest.mark.parametrize("stattest", ["ks", "psi", "wasserstein", "jensenshannon", "chisquare"])
def test_every_stattest_flags_the_shift_and_not_the_noise(reference: pd.DataFrame, stattest: str) -> None:
    drift = DriftSpec(stattest=stattest)
    shifted = judge(drift, KINDS, reference, stream(3_000, seed=8, amount_scale=1.7, online_share=0.45))
    assert {"amount", "channel"} <= {c.column for c in shifted.drifted}, stattest
    assert not judge(drift, KINDS, reference, stream(3_000, seed=9)).drifted


def test_sampling_is_deterministic(reference: pd.DataFrame) -> None:
    drift = DriftSpec(sample_size=5_000)
    current = stream(20_000, seed=10, amount_scale=1.2)
    first, again = judge(drift, KINDS, reference, current), judge(drift, KINDS, reference, current)
    assert [c.to_json() for c in first.columns] == [c.to_json() for c in again.columns]
    assert first.columns[0].n_reference == 5_000 and first.columns[0].n_current <= 5_000
