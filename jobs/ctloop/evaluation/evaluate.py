"""``ctloop evaluate``: score the candidate and the current champion on the same holdout, then apply the gate.

The holdout is the candidate snapshot's most recent ``evaluation.holdout_days``. The champion may
have trained on some of those rows (when its data ran later than the candidate's training data); the
decision then says so, since its score there is optimistic. Improvements are paired-bootstrap
intervals on the same rows (``gate.bootstrap_samples``, ``gate.confidence``). Both models are loaded
as serving loads them (pyfunc), so the gate judges what would be deployed. The decision, every check
behind it, the metrics of both models overall and per slice, and the plots a person looks at are
logged to the candidate's run.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, SliceSpec, duration_seconds
from ctloop.evaluation.gate import decide
from ctloop.evaluation.metrics import flat_metrics, metric_table, paired_bootstrap
from ctloop.lake.store import Lake
from ctloop.registry.aliases import client, current_version
from ctloop.training.training_set import load_snapshot, split_by_time

if TYPE_CHECKING:
    import pandas as pd


def champion_seen_until(spec: PipelineSpec, version: Any) -> pd.Timestamp | None:
    """Where the champion's training and validation rows end: its snapshot's end less the holdout it kept out.

    Read from the version's lineage tag ``ctloop.data_interval``; None when the version has none (a model
    registered by hand), in which case no overlap can be stated.
    """
    import pandas as pd

    interval = (version.tags or {}).get("ctloop.data_interval", "")
    if "/" not in interval:
        return None
    end = pd.Timestamp(interval.split("/")[1])
    return end - pd.Timedelta(seconds=duration_seconds(spec.evaluation.holdout_days))


def _scores(model_uri: str, frame: Any) -> np.ndarray:
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).predict(frame)["score"].to_numpy(dtype="float64")


def threshold_at_precision(y: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The score threshold with the most recall among those whose precision meets ``target``; None if none does.

    Recorded on the run as ``ctloop.threshold`` (registration copies it to the version), where serving
    reads the threshold of its decisions.
    """
    from sklearn.metrics import precision_recall_curve

    prec, rec, thresholds = precision_recall_curve(y, scores)
    ok = np.flatnonzero(prec[:-1] >= target)
    return float(thresholds[ok[np.argmax(rec[ok])]]) if ok.size else None


def _plots(spec: PipelineSpec, y: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, Any]:
    """PR curves, calibration, and the candidate's confusion matrix at the precision target's threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, precision_recall_curve

    target = spec.evaluation.precision_target
    figures = {}
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, p in curves.items():
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=label)
    ax.axhline(target, color="grey", linestyle=":", label=f"precision target {target}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall on the holdout", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend()
    figures["evaluation/pr_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for label, p in curves.items():
        observed, predicted = calibration_curve(y, p, n_bins=spec.evaluation.calibration_bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.set(xlabel="mean score", ylabel="observed fraud rate", title="Calibration (quantile bins)")
    ax.legend()
    figures["evaluation/calibration.png"] = fig

    candidate = curves["candidate"]
    found = threshold_at_precision(y, candidate, target)
    threshold = 0.5 if found is None else found
    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_predictions(y, (candidate >= threshold).astype(int), display_labels=["legit", "fraud"],
                                            ax=ax, colorbar=False)
    ax.set_title(f"Candidate at threshold {threshold:.3f}")
    figures["evaluation/confusion_matrix.png"] = fig
    return figures


def with_extra_slices(spec: PipelineSpec, extra: list[dict[str, Any]] | None, columns: Any) -> tuple[
        PipelineSpec, list[str]]:
    """The spec with a retrain request's slices (its evidence: where drift or decay was seen) added to
    ``evaluation.slices``, so the gate also holds the candidate to the champion there; and notes on those
    not evaluated (a field the holdout lacks). A name the spec declares keeps the spec's definition."""
    declared = {cut.name for cut in spec.evaluation.slices}
    added, notes = [], []
    for raw in extra or []:
        cut = SliceSpec.model_validate(raw)
        if cut.name in declared:
            continue
        if cut.field not in columns:
            notes.append(f"slice {cut.name} from the retrain evidence not evaluated: the holdout has no {cut.field!r}")
            continue
        declared.add(cut.name)
        added.append(cut)
    if not added:
        return spec, notes
    evaluation = spec.evaluation.model_copy(update={"slices": [*spec.evaluation.slices, *added]})
    return spec.model_copy(update={"evaluation": evaluation}), notes


def evaluate(spec: PipelineSpec, settings: Settings, lake: Lake, run_id: str,
             extra_slices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``extra_slices``: slice definitions from the retrain request's evidence, gated like the spec's own."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    mlflow_client = client(settings)
    tags = mlflow_client.get_run(run_id).data.tags
    if tags.get("ctloop.pipeline") != spec.name or "ctloop.model_uri" not in tags:
        raise ValueError(f"run {run_id} is not a {spec.name!r} training run with a logged model")
    manifest, frame = load_snapshot(lake, spec, tags["ctloop.snapshot_id"])
    holdout = split_by_time(spec, frame, datetime.fromisoformat(manifest["end"]))[2]
    spec, slice_notes = with_extra_slices(spec, extra_slices, holdout.columns)
    y = holdout[spec.labels.target].to_numpy(dtype="int64")
    print(f"[evaluate] scoring the candidate on {len(holdout)} holdout rows ({int(y.sum())} positives)",
          file=sys.stderr, flush=True)
    candidate_scores = _scores(tags["ctloop.model_uri"], holdout)
    candidate = metric_table(spec, holdout, candidate_scores)
    champion_version = current_version(mlflow_client, spec.registered_model, "champion")
    champion, champion_note, curves = None, "no champion yet", {"candidate": candidate_scores}
    champion_error, improvement, notes = None, {}, list(slice_notes)
    if champion_version is not None:
        try:
            champion_scores = _scores(f"models:/{spec.registered_model}@champion", holdout)
        except Exception as exc:  # noqa: BLE001 - any failure to score means there is nothing to compare with
            champion_error = f"champion v{champion_version} could not score the holdout ({exc})"
            champion_note = champion_error
        else:
            champion = metric_table(spec, holdout, champion_scores)
            curves[f"champion v{champion_version}"] = champion_scores
            champion_note = f"champion v{champion_version} scored on the same holdout"
            gate = spec.gate
            for metric in gate.min_improvement:
                print(f"[evaluate] paired bootstrap of the {metric} gain ({gate.bootstrap_samples} resamples)",
                      file=sys.stderr, flush=True)
                improvement[metric] = paired_bootstrap(metric, y, candidate_scores, champion_scores, spec.evaluation,
                                                       samples=gate.bootstrap_samples, confidence=gate.confidence)
            seen = champion_seen_until(spec, mlflow_client.get_model_version(spec.registered_model, champion_version))
            overlap = int((holdout["event_timestamp"] < seen).sum()) if seen is not None else 0
            if overlap:
                notes.append(f"champion v{champion_version} trained on {overlap:,} of the {len(holdout):,} holdout "
                             f"rows (its data ran until {seen.isoformat()}): its score here is optimistic")
    decision = decide(spec.gate, spec.evaluation, candidate, champion, improvement=improvement,
                      champion_error=champion_error, notes=notes)
    decision["champion"] = champion_note
    threshold = threshold_at_precision(y, candidate_scores, spec.evaluation.precision_target)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.log_metrics(flat_metrics(candidate, "eval.candidate"))
        if champion is not None:
            mlflow.log_metrics(flat_metrics(champion, "eval.champion"))
        mlflow.log_dict({**decision, "candidate": candidate, "champion_metrics": champion,
                         "champion_version": champion_version, "holdout_rows": len(holdout)},
                        "evaluation/gate_decision.json")
        for path, fig in _plots(spec, y, curves).items():
            mlflow.log_figure(fig, path)
            plt.close(fig)
        mlflow.set_tags({"ctloop.gate": "passed" if decision["passed"] else "refused",
                         "ctloop.gate_reasons": "; ".join(decision["reasons"])[:4900],
                         "ctloop.champion_version": champion_version or ""})
        if threshold is not None:  # the decision threshold serving uses (docs/serving.md)
            mlflow.set_tag("ctloop.threshold", repr(threshold))
    verdict = "PASSED" if decision["passed"] else "REFUSED"
    print(f"[evaluate] gate {verdict} ({decision['basis']}): " + "; ".join(decision["reasons"]),
          file=sys.stderr, flush=True)
    return {"run_id": run_id, "passed": decision["passed"], "reasons": decision["reasons"],
            "basis": decision["basis"], "checks": decision["checks"], "champion_note": champion_note,
            "improvement": improvement, "threshold": threshold,
            "candidate": candidate, "champion": ({"version": champion_version, **champion} if champion else None),
            "holdout_rows": len(holdout)}
