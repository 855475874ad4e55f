"""Drift: the model inputs of an interval, and its served scores, against the champion's reference.

The decision is ours, per ``monitoring.drift`` in the spec, and made so that a stationary stream does
not alarm as its volume grows:

1. each judged column is sampled to ``sample_size`` rows per side (a fixed seed: the same data gives the
   same verdict), and columns with fewer than ``min_samples`` values on either side are not judged;
2. a two-sample test gives a p-value: Kolmogorov–Smirnov for numbers, a chi-square test of homogeneity
   (reference vs current counts) for categories, and for numbers under ``chisquare`` the same test over
   the reference's quantile bins;
3. the p-values are corrected for testing many columns (Benjamini–Hochberg or Bonferroni);
4. an effect size says how large the change is: ``auto`` uses the normed Wasserstein distance for
   numbers and the Jensen–Shannon distance for categories; ``ks`` the KS statistic; ``psi`` the
   population stability index; ``wasserstein`` and ``jensenshannon`` those distances (on categories,
   the number-only ones fall back to ``auto``). Binned measures use the reference's quantiles (numbers)
   or its categories, the ``MAX_CATEGORIES`` most frequent, the rest as one;
5. a column drifts only if its corrected p-value is below ``alpha`` *and* its effect size is at least
   ``effect_size_floor``: the test says a difference is there, the floor that it matters. A p-value
   alone shrinks with volume until every stream "drifts"; a distance alone is noisy on small windows.

The statistics are computed here with numpy and scipy, not taken from Evidently's stat tests, which
report one number per column (a p-value *or* a distance, not both), test categories by goodness of fit
against the reference taken as exact, and bin numbers into equal-width bins over the combined range (a
heavy-tailed amount lands in one bin, and PSI then sees nothing). Evidently 0.7 renders the HTML report:
each column's distributions, with our effect size and verdict (registered as a stat test per column),
so the report shows the decision the check made rather than a second opinion with other rules.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ctloop.config.spec import DriftSpec, PipelineSpec
from ctloop.lake.paths import features_prefix
from ctloop.lake.store import Lake
from ctloop.monitoring.checks import Check
from ctloop.monitoring.quality import landed_frame

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

Kind = Literal["number", "category"]
SEED = 20260101  # sampling seed: the same interval and reference always give the same verdict
MAX_CATEGORIES = 50  # the reference's most frequent categories are compared one by one, the rest as one
QUANTILE_BINS = 20  # numbers are binned by the reference's quantiles for PSI, Jensen-Shannon and chi-square
OTHER = "__other__"
REPORT_ROWS = 20_000  # rows per side the HTML report draws: its histograms look the same, and it renders in seconds


@dataclass(frozen=True)
class ColumnDrift:
    """One column's statistics and verdict (``drifted`` only once the p-values are corrected)."""

    column: str
    kind: Kind
    test: str
    measure: str
    p_value: float
    effect: float
    n_reference: int
    n_current: int
    p_corrected: float = float("nan")
    drifted: bool = False

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("p_value", "p_corrected", "effect"):
            row[key] = float(f"{row[key]:.6g}")
        return row


def input_columns(spec: PipelineSpec) -> dict[str, Kind]:
    """The model's inputs (``drift.features``, else every feature and request field) and how each is compared:
    strings and bools as categories, numbers as numbers."""
    fields = spec.events[spec.primary].fields
    kinds: dict[str, Kind] = {name: "number" for name in spec.feature_columns}
    for name in spec.model.request_fields:
        kinds[name] = "number" if fields[name].type in ("int", "double") else "category"
    chosen = spec.monitoring.drift.features
    if chosen is not None:
        unknown = [c for c in chosen if c not in kinds]
        if unknown:
            raise ValueError(f"monitoring.drift.features: {unknown} are not model inputs ({', '.join(kinds)})")
        kinds = {c: kinds[c] for c in chosen}
    return kinds


def sample(frame: pd.DataFrame, size: int, seed: int = SEED) -> pd.DataFrame:
    """At most ``size`` rows, drawn without replacement with a fixed seed (all of them when fewer)."""
    if len(frame) <= size:
        return frame
    rows = np.random.default_rng(seed).choice(len(frame), size=size, replace=False)
    return frame.iloc[np.sort(rows)]


def _numbers(values: pd.Series) -> np.ndarray:
    import pandas as pd

    out = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return out[np.isfinite(out)]


def _categories(values: pd.Series) -> pd.Series:
    return values.dropna().astype(str)


def _quantile_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both sides in the reference's quantile bins (ties merge bins, so a discrete column gets fewer)."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
    return (np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1),
            np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1))


def _category_counts(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Counts per category: the reference's ``MAX_CATEGORIES`` most frequent, then every other value as one."""
    top = list(ref.value_counts().index[:MAX_CATEGORIES])
    known = set(top)
    ref_counts = ref.where(ref.isin(known), OTHER).value_counts()
    cur_counts = cur.where(cur.isin(known), OTHER).value_counts()
    labels = top + ([OTHER] if OTHER in ref_counts.index or OTHER in cur_counts.index else [])
    return (ref_counts.reindex(labels, fill_value=0).to_numpy(), cur_counts.reindex(labels, fill_value=0).to_numpy(),
            labels)


def _homogeneity_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Chi-square test that both samples come from one distribution over these bins (2 x k contingency)."""
    from scipy.stats import chi2_contingency

    keep = (ref_counts + cur_counts) > 0
    if keep.sum() < 2:
        return 1.0
    return float(chi2_contingency(np.vstack([ref_counts[keep], cur_counts[keep]]), correction=False).pvalue)


def _shares(counts: np.ndarray) -> np.ndarray:
    """Bin shares with half a count added to each bin, so an empty bin does not make PSI infinite."""
    smoothed = counts + 0.5
    return smoothed / smoothed.sum()


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    p, q = _shares(ref_counts), _shares(cur_counts)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen–Shannon distance in base 2: 0 for equal distributions, 1 for disjoint ones."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2))


def column_drift(column: str, kind: Kind, reference: pd.Series, current: pd.Series, method: str) -> ColumnDrift:
    """The p-value and effect size of one column (uncorrected, no verdict yet)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    if kind == "category":
        ref, cur = _categories(reference), _categories(current)
        measure = "psi" if method == "psi" else "jensenshannon"
        ref_counts, cur_counts, _ = _category_counts(ref, cur)
        p = _homogeneity_p(ref_counts, cur_counts)
        effect = psi(ref_counts, cur_counts) if measure == "psi" else jensen_shannon(ref_counts, cur_counts)
        return ColumnDrift(column, kind, "chisquare", measure, p, effect, len(ref), len(cur))
    ref, cur = _numbers(reference), _numbers(current)
    measure = {"auto": "wasserstein", "chisquare": "jensenshannon"}.get(method, method)
    if method == "chisquare":
        ref_counts, cur_counts = _quantile_counts(ref, cur)
        test, p = "chisquare", _homogeneity_p(ref_counts, cur_counts)
        ks_d = None
    else:
        found = ks_2samp(ref, cur, method="asymp")
        test, p, ks_d = "ks", float(found.pvalue), float(found.statistic)
    if measure == "ks":
        effect = float(ks_d)  # measure "ks" is only ever the KS test's own statistic
    elif measure == "wasserstein":
        effect = float(wasserstein_distance(ref, cur)) / max(float(np.std(ref)), 1e-3)
    else:
        ref_counts, cur_counts = _quantile_counts(ref, cur)
        effect = psi(ref_counts, cur_counts) if measure == "psi" else jensen_shannon(ref_counts, cur_counts)
    return ColumnDrift(column, kind, test, measure, p, effect, len(ref), len(cur))


def correct(p_values: list[float], how: str) -> list[float]:
    """Corrected p-values: Benjamini–Hochberg (false discovery rate), Bonferroni (family-wise) or none."""
    if not p_values:
        return []
    p = np.asarray(p_values, dtype="float64")
    if how == "benjamini_hochberg":
        from scipy.stats import false_discovery_control

        return [float(v) for v in false_discovery_control(p, method="bh")]
    if how == "bonferroni":
        return [float(v) for v in np.minimum(1.0, p * len(p))]
    return [float(v) for v in p]


@dataclass(frozen=True)
class Judgement:
    """What ``judge`` found: per column, the columns left out (and why), and the verdict."""

    columns: list[ColumnDrift]
    skipped: dict[str, str]
    n_reference: int
    n_current: int
    no_verdict: str | None = None

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    def share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0


def judge(drift: DriftSpec, kinds: dict[str, Kind], reference: pd.DataFrame, current: pd.DataFrame,
          seed: int = SEED) -> Judgement:
    """Every column of ``kinds`` present on both sides: statistics on samples, corrected, with the effect floor."""
    if len(current) < drift.min_samples:
        return Judgement([], {}, len(reference), len(current),
                         no_verdict=f"only {len(current):,} rows in the interval (monitoring.drift.min_samples "
                                    f"{drift.min_samples:,})")
    ref, cur = sample(reference, drift.sample_size, seed), sample(current, drift.sample_size, seed + 1)
    found, skipped = [], {}
    for column, kind in kinds.items():
        if column not in ref.columns or column not in cur.columns:
            skipped[column] = "not in the " + ("reference" if column not in ref.columns else "interval's data")
            continue
        n_ref, n_cur = int(ref[column].notna().sum()), int(cur[column].notna().sum())
        if min(n_ref, n_cur) < drift.min_samples:
            skipped[column] = f"{min(n_ref, n_cur):,} values on one side (min_samples {drift.min_samples:,})"
            continue
        method = drift.per_feature.get(column, drift.stattest)
        found.append(column_drift(column, kind, ref[column], cur[column], method))
    corrected = correct([c.p_value for c in found], drift.correction)
    columns = [ColumnDrift(**{**asdict(c), "p_corrected": p,
                              "drifted": bool(p < drift.alpha and c.effect >= drift.effect_size_floor)})
               for c, p in zip(found, corrected, strict=True)]
    if not columns:
        return Judgement([], skipped, len(reference), len(current), no_verdict="no column could be judged")
    return Judgement(columns, skipped, len(reference), len(current))


def verdict(drift: DriftSpec, judged: Judgement, what: str) -> tuple[bool, str]:
    """(passed, detail) of a judgement: fails when more than ``drift_share`` of the judged columns drifted."""
    if judged.no_verdict:
        return True, f"no verdict: {judged.no_verdict}"
    drifted = judged.drifted
    passed = judged.share() <= drift.drift_share
    listed = ", ".join(f"{c.column} ({c.measure} {c.effect:.3g}, p {c.p_corrected:.2g})" for c in drifted)
    counts = f"{len(drifted)} of {len(judged.columns)} {what} drifted"
    if passed:
        return True, f"{counts} (at most {drift.drift_share:.0%} allowed)" + (f": {listed}" if listed else "")
    return False, f"{counts}: {listed}"


def evidence(judged: Judgement, drift: DriftSpec) -> dict[str, Any]:
    return {"drifted": [c.to_json() for c in judged.drifted], "columns": [c.to_json() for c in judged.columns],
            "skipped": judged.skipped, "share": round(judged.share(), 4), "n_current": judged.n_current,
            "n_reference": judged.n_reference, "no_verdict": judged.no_verdict,
            "settings": drift.model_dump(mode="json")}


def drift_slices(spec: PipelineSpec, judged: Judgement, reference: pd.DataFrame, current: pd.DataFrame
                 ) -> list[dict[str, Any]]:
    """Where each drifted field of the primary event moved, as an evaluation slice the retrained model's gate
    also checks (``evidence.slices``): the category whose share grew most, or the reference's top or bottom
    decile for a number that moved up or down. Features (aggregates) are not event fields, so no slice."""
    fields = spec.events[spec.primary].fields
    slices = []
    for col in judged.drifted:
        if col.column not in fields:
            continue
        if col.kind == "category":
            ref, cur = _categories(reference[col.column]), _categories(current[col.column])
            grown = cur.value_counts(normalize=True).sub(ref.value_counts(normalize=True), fill_value=0)
            value = str(grown.idxmax())
            slices.append({"name": _slice_name(f"drift_{col.column}_{value}"), "field": col.column, "equals": value})
        else:
            ref, cur = _numbers(reference[col.column]), _numbers(current[col.column])
            up = float(np.median(cur)) >= float(np.median(ref))
            edge = float(np.quantile(ref, 0.9 if up else 0.1))
            slices.append({"name": _slice_name(f"drift_{col.column}_{'high' if up else 'low'}"), "field": col.column,
                           **({"min": edge} if up else {"max": edge})})
    return slices


def _slice_name(text: str) -> str:
    """A slice name the spec accepts (lower-case letters, digits and ``_``, at most 63 characters)."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower())[:63]


def report_html(judged: Judgement, reference: pd.DataFrame, current: pd.DataFrame,
                drift: DriftSpec, seed: int = SEED) -> str:
    """Evidently's HTML report of the judged columns, on the same samples, showing our effect size and verdict."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType
    from evidently.metrics import ValueDrift

    size = min(drift.sample_size, REPORT_ROWS)
    ref, cur = sample(reference, size, seed), sample(current, size, seed + 1)
    metrics, frames = [], ([], [])
    for c in sorted(judged.columns, key=lambda c: (not c.drifted, -c.effect)):  # what drifted first, largest first
        column_type = ColumnType.Numerical if c.kind == "number" else ColumnType.Categorical
        name = f"ctloop_{c.column}"
        label = f"{c.measure} (corrected p {c.p_corrected:.2g}, {drift.correction}; floor {drift.effect_size_floor})"
        register_stattest(StatTest(name=name, display_name=label, allowed_feature_types=[column_type]),
                          lambda _r, _c, _t, _th, c=c: (c.effect, c.drifted))
        metrics.append(ValueDrift(column=c.column, method=name, threshold=drift.effect_size_floor))
        for side, frame in zip(frames, (ref, cur), strict=True):
            values = frame[c.column]
            if c.kind == "category":  # the same categories the statistic compared, the rarest as one
                top = set(_categories(ref[c.column]).value_counts().index[:MAX_CATEGORIES])
                values = values.astype("string").where(values.astype("string").isin(top) | values.isna(), OTHER)
            else:
                values = values.astype("float64")
            side.append(values.rename(c.column).reset_index(drop=True))
    import pandas as pd

    ref_frame, cur_frame = (pd.concat(side, axis=1) for side in frames)
    definition = DataDefinition(numerical_columns=[c.column for c in judged.columns if c.kind == "number"],
                                categorical_columns=[c.column for c in judged.columns if c.kind == "category"])
    snapshot = Report(metrics).run(Dataset.from_pandas(cur_frame, data_definition=definition),
                                   Dataset.from_pandas(ref_frame, data_definition=definition))
    return snapshot.get_html_str(as_iframe=False)


def interval_inputs(spec: PipelineSpec, lake: Lake, start: datetime, end: datetime) -> tuple[Any, Any, str]:
    """The model inputs of [start, end), the served scores and versions (None without a prediction log), the source.

    The prediction log when it holds the interval: its ``features`` are every input as the model got it,
    so serving-side skew shows as drift too. Else the landed primary events (their request fields),
    each joined to its feature rows (``features/``, the row at the event's own time describes the entity
    just before it: what the online store served). Both are read from what the lander wrote (``raw/``),
    so any landed interval can be judged, before or without the Spark jobs.
    """
    import msgspec
    import pandas as pd

    if spec.serving.predictions is not None:
        served, unreadable = landed_frame(spec, lake, spec.serving.predictions, start, end)
        if unreadable:
            raise ValueError(unreadable)
        if len(served) >= spec.monitoring.drift.min_samples:  # else too few to judge: the landed events may do
            decode = msgspec.json.Decoder(dict)
            inputs = pd.DataFrame.from_records([decode.decode(f) if isinstance(f, str) and f else {}
                                                for f in served["features"]])
            return inputs, served[["score", "model_version"]].reset_index(drop=True), "prediction log"
    events, unreadable = landed_frame(spec, lake, spec.primary, start, end)
    if unreadable:
        raise ValueError(unreadable)
    primary = spec.events[spec.primary]
    frame = events.reset_index(drop=True)
    if spec.features is None or frame.empty:
        return frame, None, "landed events"
    frame["_t"] = pd.to_datetime(frame[primary.time_field], utc=True)
    for name, view in spec.features.views.items():
        key = spec.features.entities[view.entity].join_key
        rows = _feature_rows(lake, spec, name, start, end)
        if rows is None or key not in frame.columns:
            continue
        rows = rows.rename(columns={"event_timestamp": "_t"}).assign(_t=lambda r: pd.to_datetime(r["_t"], utc=True))
        frame = frame.merge(rows.drop_duplicates([key, "_t"]), on=[key, "_t"], how="left")
    return frame.drop(columns="_t"), None, "landed events and feature rows"


def _feature_rows(lake: Lake, spec: PipelineSpec, view: str, start: datetime, end: datetime) -> Any:
    """A view's feature rows of [start, end) (entity key, time, features) as pandas; None before the job ran."""
    import pyarrow.dataset as ds

    assert spec.features is not None
    data = lake.dataset(features_prefix(spec.name, view))
    if data is None:
        return None
    definition = spec.features.views[view]
    key = spec.features.entities[definition.entity].join_key
    t = ds.field("event_timestamp")
    cond = ((ds.field("event_date") >= f"{start:%Y-%m-%d}") & (ds.field("event_date") <= f"{end:%Y-%m-%d}")
            & (t >= start) & (t < end))
    table = data.to_table(columns=[key, "event_timestamp", *definition.feature_types], filter=cond)
    return table.to_pandas() if table.num_rows else None


def checks(spec: PipelineSpec, lake: Lake, start: datetime, end: datetime, reference: Any, *,
           version: str | None, reference_scores: Callable[[], Any],
           publish: Callable[[str, str], str]) -> list[Check]:
    """``drift_features`` and (``drift.prediction_drift``) ``drift_predictions`` for [start, end).

    ``reference`` is the reference sample (a DataFrame), or a string saying why there is none;
    ``reference_scores()`` champion ``version``'s scores of it (called only when that version's served
    scores are there to compare: during a deploy the interval may hold two versions' predictions);
    ``publish(name, html)`` stores a report and returns its link.
    """
    import pandas as pd

    drift = spec.monitoring.drift
    window = [start.isoformat(), end.isoformat()]
    if isinstance(reference, str):
        out = [Check("drift_features", True, f"no verdict: {reference}", {"interval": window})]
        return out + ([Check("drift_predictions", True, f"no verdict: {reference}", {"interval": window})]
                      if drift.prediction_drift else [])
    try:
        current, served, source = interval_inputs(spec, lake, start, end)
    except ValueError as exc:  # landed files that cannot be read together: the quality check fails on them
        out = [Check("drift_features", True, f"no verdict: {exc}", {"interval": window})]
        return out + ([Check("drift_predictions", True, f"no verdict: {exc}", {"interval": window})]
                      if drift.prediction_drift else [])
    kinds = input_columns(spec)
    judged = judge(drift, kinds, reference, current)
    passed, detail = verdict(drift, judged, "inputs")
    log(f"features [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}) from the {source}: {detail}")
    found = {**evidence(judged, drift), "interval": window, "source": source,
             "slices": drift_slices(spec, judged, reference, current)}
    if judged.columns:
        found["report"] = publish("drift_features", report_html(judged, reference, current, drift))
    out = [Check("drift_features", passed, detail, found)]
    if not drift.prediction_drift:
        return out
    if version is None:
        return out + [Check("drift_predictions", True, "no verdict: no champion to score the reference",
                            {"interval": window})]
    versions = {} if served is None else {str(k): int(v) for k, v in served["model_version"].value_counts().items()}
    if served is not None:
        served = served[served["model_version"].astype(str) == version]
    if served is None or served.empty:
        return out + [Check("drift_predictions", True, f"no verdict: no predictions of champion v{version} in the "
                            "interval", {"interval": window, "served_versions": versions})]
    scores = reference_scores()
    scored = {"score": "number"}
    judged = judge(drift.model_copy(update={"per_feature": {}, "correction": "none"}), scored,
                   pd.DataFrame({"score": scores}), served[["score"]])
    passed, detail = verdict(drift, judged, "score distributions")
    log(f"predictions: {detail}")
    found = {**evidence(judged, drift), "interval": window, "source": source, "served_versions": versions,
             "version": version}
    if judged.columns:
        found["report"] = publish("drift_predictions", report_html(judged, pd.DataFrame({"score": scores}),
                                                                   served[["score"]], drift))
    return out + [Check("drift_predictions", passed, detail, found)]


def log(line: str) -> None:
    print(f"[drift] {line}", file=sys.stderr, flush=True)
