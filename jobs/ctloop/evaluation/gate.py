"""The evaluation gate: does a candidate's metric table earn registration? A pure function of the tables.

Every check is reported, passed or not, so a decision explains itself in the run note and in MLflow.
"""

from __future__ import annotations

from typing import Any

from ctloop.config.spec import LOWER_IS_BETTER, EvaluationSpec, GateSpec
from ctloop.evaluation.metrics import is_nan


def _better_by(metric: str, candidate: float, reference: float) -> float:
    """How much better the candidate is, in the metric's better direction (negative: worse)."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference


def decide(gate: GateSpec, evaluation: EvaluationSpec, candidate: dict[str, Any],
           champion: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the gate policy; every check is reported, passed or not, so the decision explains itself."""
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})

    overall = candidate["overall"]
    for metric, limit in gate.floors.items():
        value = overall[metric]
        lower = metric in LOWER_IS_BETTER
        ok = not is_nan(value) and (value <= limit if lower else value >= limit)
        check(f"floor.{metric}", ok, f"{metric} {value:.4f} {'<=' if lower else '>='} {limit} required")
    if champion is not None:
        for metric, limit in gate.min_improvement.items():
            gain = _better_by(metric, overall[metric], champion["overall"][metric])
            ok = not is_nan(gain) and gain >= limit
            check(f"improvement.{metric}", ok, f"{metric} {overall[metric]:.4f} vs champion "
                                                f"{champion['overall'][metric]:.4f}: gain {gain:+.4f}, "
                                                f"at least {limit:+} required")
        metric = gate.primary_metric
        for name, row in candidate["slices"].items():
            reference = champion["slices"].get(name)
            if reference is None or row["positives"] < evaluation.min_slice_positives:
                check(f"slice.{name}", True, f"not gated: {row['positives']} positives in the holdout, "
                                             f"{evaluation.min_slice_positives} needed")
                continue
            drop = -_better_by(metric, row[metric], reference[metric])
            ok = not is_nan(drop) and drop <= gate.max_slice_regression
            check(f"slice.{name}", ok, f"{metric} {row[metric]:.4f} vs champion {reference[metric]:.4f}: "
                                       f"regression {drop:+.4f}, at most {gate.max_slice_regression} allowed")
    passed = all(c["passed"] for c in checks)
    failed = [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]]
    basis = "floors and comparison with the champion" if champion is not None else "floors only (no champion)"
    return {"passed": passed, "basis": basis, "checks": checks,
            "reasons": failed or [f"all {len(checks)} checks passed ({basis})"]}
