"""The evaluation gate: does a candidate's metric table earn registration? A pure function of the tables.

It never passes by default: a gate that checked nothing refuses, a missing champion refuses unless
the spec lets a first model register on its floors (``gate.first_model``), and a champion that
cannot score the holdout refuses unless the spec says the floors may decide then
(``gate.champion_unscorable``). Improvements over the champion are judged by the lower bound of a
paired bootstrap interval, not by a point estimate. Every check is reported, passed or not, so a
decision explains itself in the run note and in MLflow.
"""

from __future__ import annotations

from typing import Any

from ctloop.config.spec import LOWER_IS_BETTER, EvaluationSpec, GateSpec
from ctloop.evaluation.metrics import better_by, is_nan


def decide(gate: GateSpec, evaluation: EvaluationSpec, candidate: dict[str, Any], champion: dict[str, Any] | None,
           *, improvement: dict[str, dict[str, float]] | None = None, champion_error: str | None = None,
           notes: list[str] | None = None) -> dict[str, Any]:
    """Apply the gate policy to the candidate's metric table and, when there is one, the champion's.

    ``improvement`` holds the paired-bootstrap interval of each ``min_improvement`` metric
    (``metrics.paired_bootstrap``); ``champion_error`` says why a champion that exists could not be
    scored; ``notes`` are facts the decision must carry (a champion that trained on holdout rows).
    """
    checks: list[dict[str, Any]] = []

    measured = 0  # checks of a metric (not the policy's own verdicts, not slices too thin to gate)

    def check(name: str, passed: bool, detail: str, *, of_a_metric: bool = True) -> None:
        nonlocal measured
        checks.append({"check": name, "passed": bool(passed), "detail": detail})
        measured += of_a_metric

    overall = candidate["overall"]
    for metric, limit in gate.floors.items():
        value = overall[metric]
        lower = metric in LOWER_IS_BETTER
        ok = not is_nan(value) and (value <= limit if lower else value >= limit)
        check(f"floor.{metric}", ok, f"{metric} {value:.4f} {'<=' if lower else '>='} {limit} required")
    if champion is not None:
        basis = "floors and comparison with the champion"
        _compare(gate, evaluation, candidate, champion, improvement or {}, check)
    elif champion_error is not None:
        basis = "floors only (the champion could not be scored)"
        allowed = gate.champion_unscorable == "floors"
        check("champion", allowed, f"{champion_error}; " + (
            "gate.champion_unscorable: floors lets the floors decide" if allowed else
            "refused (gate.champion_unscorable: refuse); fix the champion or set it to floors"), of_a_metric=False)
    else:
        basis = "floors only (no champion)"
        check("first_model", gate.first_model == "floors",
              "no champion to compare with: " + ("gate.first_model: floors lets the floors decide"
                                                 if gate.first_model == "floors" else
                                                 "refused (gate.first_model: refuse); promote a first model by hand "
                                                 "or set gate.first_model: floors"), of_a_metric=False)
    if not measured:
        check("something_checked", False, "the gate checked nothing: set gate.floors or gate.min_improvement")
    for note in notes or []:
        check("note", True, note, of_a_metric=False)
    passed = all(c["passed"] for c in checks)
    failed = [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]]
    gated = [c for c in checks if c["check"] != "note"]
    reasons = failed or [f"all {len(gated)} checks passed ({basis})"]
    return {"passed": passed, "basis": basis, "checks": checks, "reasons": reasons + list(notes or []),
            "improvement": improvement or {}}


def _compare(gate: GateSpec, evaluation: EvaluationSpec, candidate: dict[str, Any], champion: dict[str, Any],
             improvement: dict[str, dict[str, float]], check: Any) -> None:
    overall = candidate["overall"]
    for metric, limit in gate.min_improvement.items():
        mine, theirs = overall[metric], champion["overall"][metric]
        interval = improvement.get(metric)
        if interval is None:  # a caller without per-row scores: the point estimate is all there is
            gain = better_by(metric, mine, theirs)
            ok = not is_nan(gain) and gain >= limit
            check(f"improvement.{metric}", ok, f"{metric} {mine:.4f} vs champion {theirs:.4f}: gain {gain:+.4f}, "
                                               f"at least {limit:+} required")
            continue
        low, high = interval["low"], interval["high"]
        ok = not is_nan(low) and low >= limit
        check(f"improvement.{metric}", ok,
              f"{metric} {mine:.4f} vs champion {theirs:.4f}: gain {interval['point']:+.4f}, "
              f"{interval['confidence']:.0%} interval [{low:+.4f}, {high:+.4f}] over {interval['samples']} paired "
              f"resamples; its lower bound must be at least {limit:+}")
    metric = gate.primary_metric
    for name, row in candidate["slices"].items():
        reference = champion["slices"].get(name)
        if reference is None or row["positives"] < evaluation.min_slice_positives:
            check(f"slice.{name}", True, f"not gated: {row['positives']} positives in the holdout, "
                                         f"{evaluation.min_slice_positives} needed", of_a_metric=False)
            continue
        drop = -better_by(metric, row[metric], reference[metric])
        ok = not is_nan(drop) and drop <= gate.max_slice_regression
        check(f"slice.{name}", ok, f"{metric} {row[metric]:.4f} vs champion {reference[metric]:.4f}: "
                                   f"regression {drop:+.4f}, at most {gate.max_slice_regression} allowed")
