"""Pipeline specs: ``pipelines/<name>.yaml`` parsed into typed, cross-checked models.

The spec is the single source of truth for a pipeline's event schemas, topics and landing policy,
so a second pipeline is a new YAML file, not a code change. Errors name the file, the field and
what was expected.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

FieldType = Literal["string", "int", "double", "bool", "timestamp"]


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType
    required: bool = True
    description: str = ""
    allowed: list[str] | None = Field(None, description="For strings: the only values accepted.")
    min: float | None = Field(None, description="For numbers: smallest value accepted.")
    max: float | None = Field(None, description="For numbers: largest value accepted.")
    max_length: int | None = Field(None, gt=0, description="For strings: longest value accepted.")

    @model_validator(mode="after")
    def _constraints_fit_type(self) -> FieldSpec:
        if (self.allowed is not None or self.max_length is not None) and self.type != "string":
            raise ValueError(f"'allowed' and 'max_length' apply to string fields, not {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "double"):
            raise ValueError(f"'min' and 'max' apply to int and double fields, not {self.type}")
        return self


class EventSpec(_Strict):
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(4, ge=1, le=1024)
    key: str = Field(description="Field whose value is the Kafka message key (keeps an entity's events ordered).")
    id_field: str = Field(description="Unique event id: the lake holds each id exactly once.")
    time_field: str = Field(description="Event time: drives lake partitioning and file rotation.")
    max_event_bytes: int = Field(65_536, gt=0, description="Larger messages go to the dead-letter store.")
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _roles_name_fields(self) -> EventSpec:
        for role in ("key", "id_field", "time_field"):
            name = getattr(self, role)
            if name not in self.fields:
                raise ValueError(f"{role} {name!r} is not one of the fields ({', '.join(self.fields)})")
        if self.fields[self.time_field].type != "timestamp":
            raise ValueError(f"time_field {self.time_field!r} must have type timestamp")
        for role in ("id_field", "time_field", "key"):
            if not self.fields[getattr(self, role)].required:
                raise ValueError(f"{role} {getattr(self, role)!r} must be required")
        return self


class LabelSpec(_Strict):
    events: str = Field(description="Name of the event stream that carries labels.")
    join_key: str = Field(description="Field present in both the labelled and the label events.")
    target: str = Field("label", description="Name of the label column in training sets.")
    maturity_days: int = Field(
        30, ge=0, description="An event without a label counts as negative only this long after it happened."
    )


class IngestSpec(_Strict):
    consumer_group: str = ""
    flush_records: int = Field(100_000, gt=0, description="Close a file set after this many records.")
    flush_bytes: int = Field(128 * 2**20, gt=0, description="Close a file set after this many message bytes.")
    rotate_interval_s: int = Field(
        3600, gt=0, description="Close a file set when record time moves past this many seconds from its first record."
    )


DURATION_RE = r"^([1-9][0-9]*)(s|m|h|d)$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> int:
    """Seconds in a duration like ``30s``, ``15m``, ``1h``, ``7d`` (already validated by the spec)."""
    match = re.match(DURATION_RE, value)
    if match is None:
        raise ValueError(f"expected a duration like 1h/24h/7d, got {value!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _check_duration(value: str) -> str:
    duration_seconds(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
AggFunction = Literal["sum", "count", "mean", "min", "max", "count_distinct", "label_rate"]
FeatureType = Literal["int", "double"]


class AggregationSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Feature name, unique across the pipeline.")
    function: AggFunction
    column: str | None = Field(None, description="Aggregated field; not used by count and label_rate.")
    window: Duration = Field(description="Trailing window ending just before each feature row's time.")
    where: str | None = Field(None, description="Spark SQL filter applied to the events before aggregating.")

    @model_validator(mode="after")
    def _column_fits_function(self) -> AggregationSpec:
        if self.function in ("count", "label_rate") and self.column is not None:
            raise ValueError(f"column: {self.function} takes no column, got {self.column!r}")
        if self.function not in ("count", "label_rate") and self.column is None:
            raise ValueError(f"column: {self.function} needs a column")
        return self

    @property
    def dtype(self) -> FeatureType:
        return "int" if self.function in ("count", "count_distinct") else "double"


class FeatureViewSpec(_Strict):
    entity: str = Field(description="Key of `features.entities` the view is keyed by.")
    source: str = Field(description="Event stream aggregated (a key of `events`).")
    ttl: Duration = Field("7d", description="How long a feature row serves lookups after its time.")
    aggregations: list[AggregationSpec] = Field(default_factory=list)
    sql: str | None = Field(None, description="Spark SQL producing extra feature rows (see docs).")
    sql_features: dict[str, FeatureType] = Field(default_factory=dict, description="Columns `sql` yields.")

    @model_validator(mode="after")
    def _has_features(self) -> FeatureViewSpec:
        if not self.aggregations and not self.sql:
            raise ValueError("declares no features: give aggregations or sql")
        if bool(self.sql) != bool(self.sql_features):
            raise ValueError("sql and sql_features go together")
        return self

    @property
    def feature_types(self) -> dict[str, FeatureType]:
        return {**{a.name: a.dtype for a in self.aggregations}, **self.sql_features}


class EntitySpec(_Strict):
    join_key: str = Field(description="Field of the primary stream identifying the entity.")
    description: str = ""


class FeaturesSpec(_Strict):
    lateness: Duration = Field("2d", description="Dedupe look-back and late-data recompute window.")
    materialize_chunk: Duration = Field("1d", description="Materialization works through ranges in chunks this long.")
    materialize_overlap: Duration = Field("2h", description="Re-materialized before the watermark, for late rows.")
    entities: dict[str, EntitySpec]
    views: dict[str, FeatureViewSpec]
    service: str = Field("", description="Feast feature service of the model (default `<name>_model`).")


Metric = Literal["pr_auc", "roc_auc", "recall_at_precision", "log_loss", "calibration_error"]
METRICS: tuple[str, ...] = get_args(Metric)
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "calibration_error"})


class ModelSpec(_Strict):
    builder: str = Field("ctloop.training.model:build_model", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                         description="'module:function' that builds the Keras model from the spec.")
    registered_name: str = Field("", description="MLflow registered model name (default `ctloop-<name>`).")
    request_fields: list[str] = Field(
        default_factory=list,
        description="Fields of the primary event the model reads at request time, next to the features.")
    hidden_units: list[int] = Field(default_factory=lambda: [64, 32], description="Dense layer widths.")
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(1024, gt=0)
    max_epochs: int = Field(20, gt=0)
    patience: int = Field(3, gt=0, description="Early stopping: epochs without validation PR-AUC gain.")
    seed: int = Field(42, description="Seeds weights, shuffling and dropout: same snapshot + seed, same model.")
    validation_days: Duration = Field("3d", description="Most recent span before the holdout, for early stopping.")
    training_window: Duration = Field("60d", description="Span of labelled history `training-set --latest` takes.")
    params: dict[str, Any] = Field(default_factory=dict, description="Free-form arguments for a custom builder.")


class SliceSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    field: str = Field(description="Field of the primary event the slice selects on.")
    equals: str | None = Field(None, description="Rows whose field has this value.")
    min: float | None = Field(None, description="Rows whose field is at least this.")
    max: float | None = Field(None, description="Rows whose field is below this.")

    @model_validator(mode="after")
    def _one_rule(self) -> SliceSpec:
        if (self.equals is None) == (self.min is None and self.max is None):
            raise ValueError("give either equals or min/max")
        return self


class EvaluationSpec(_Strict):
    holdout_days: Duration = Field("5d", description="Most recent span of the snapshot, scored by both models.")
    precision_target: float = Field(0.8, gt=0, lt=1, description="recall_at_precision is measured at this precision.")
    calibration_bins: int = Field(10, ge=2, le=100)
    min_slice_positives: int = Field(
        10, ge=1, description="A slice with fewer positives in the holdout is reported but not gated.")
    slices: list[SliceSpec] = Field(default_factory=list)


class GateSpec(_Strict):
    floors: dict[Metric, float] = Field(
        default_factory=dict, description="Absolute limits: at least (or, for lower-is-better, at most) this.")
    min_improvement: dict[Metric, float] = Field(
        default_factory=dict, description="Candidate minus champion, in the metric's better direction.")
    max_slice_regression: float = Field(
        0.05, ge=0, description="Largest drop of primary_metric allowed on any gated slice vs the champion.")
    primary_metric: Metric = Field("pr_auc", description="Metric compared per slice.")
    first_model: Literal["refuse", "floors"] = Field(
        "refuse", description="Without a champion: 'floors' lets a model register on the floors alone (they must be "
                              "set); 'refuse' leaves the first promotion to a person.")
    champion_unscorable: Literal["refuse", "floors"] = Field(
        "refuse", description="When the champion cannot score the holdout: 'refuse', or judge on the floors alone.")
    bootstrap_samples: int = Field(
        1000, ge=100, le=100_000, description="Paired bootstrap resamples of the holdout for min_improvement.")
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Two-sided confidence of the improvement's interval; its lower bound must "
                                        "clear min_improvement. Also the confidence of monitoring's "
                                        "realized-performance bound.")

    @model_validator(mode="after")
    def _first_model_needs_floors(self) -> GateSpec:
        for setting in ("first_model", "champion_unscorable"):
            if getattr(self, setting) == "floors" and not self.floors:
                raise ValueError(f"{setting}: 'floors' needs gate.floors to state them")
        return self


class QualitySpec(_Strict):
    min_rows: int = Field(1000, ge=1, description="A training set with fewer rows is refused.")
    max_missing_fraction: float = Field(0.2, ge=0, le=1, description="Largest share of missing values per feature.")
    label_rate_min: float = Field(0.0005, ge=0, le=1, description="Lowest plausible positive rate.")
    label_rate_max: float = Field(0.5, ge=0, le=1, description="Highest plausible positive rate.")


class RetrainSpec(_Strict):
    schedule: str | None = Field("@daily", description="Cron or preset for scheduled training; null: events only.")
    cooldown: Duration = Field("6h", description="No new training run this soon after the last accepted one.")
    daily_budget: int = Field(4, ge=1, description="Accepted training runs per pipeline per UTC day.")
    merge_window: Duration = Field("1h", description="Requests this close to a pending one are merged into it.")


class SimulatorSpec(_Strict):
    generator: str = Field(description="'module:Class' of the event generator used by `ctloop produce`.")
    params: dict[str, Any] = Field(default_factory=dict)


class ServingSpec(_Strict):
    predictions: str | None = Field(
        None, description="Event stream (a key of `events`) every prediction is logged to, which the lander lands "
                          "like any other; null: no prediction log.")
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Score at or above which `decision` is 1; null: the threshold the evaluation "
                                      "chose for evaluation.precision_target (the model version's ctloop.threshold).")
    max_batch_size: int = Field(64, ge=1, le=10_000, description="Rows scored together by dynamic batching.")
    max_wait_ms: float = Field(2.0, ge=0, le=1000,
                               description="Longest a request waits for others to batch with (none if it came alone).")
    max_rows: int = Field(1000, ge=1, le=100_000, description="Rows one request may carry.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    log_queue: int = Field(
        10_000, ge=1, le=10_000_000, description="Predictions waiting for the broker, at most; past it they are "
                                                 "dropped and counted (the log never blocks a request).")


class DeploySpec(_Strict):
    smoke_requests: int = Field(20, ge=1, le=10_000,
                                description="Golden requests from the candidate's holdout, with their expected scores.")
    smoke_tolerance: float = Field(1e-4, gt=0, description="Largest |served - expected| score in the smoke test.")
    smoke_p99_ms: float = Field(100.0, gt=0, description="Latency budget of the smoke test (p99).")
    watch: Duration = Field("60s", description="After the switch, how long error rate and p99 are watched.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Share of failed requests that rolls back.")
    max_p99_ms: float = Field(250.0, gt=0, description="p99 latency that rolls back.")
    min_watch_requests: int = Field(20, ge=0, description="Fewer requests than this in the watch window: no verdict "
                                                          "on error rate or latency, the window is extended once.")
    keep_old: Duration = Field("10m", description="The old slot stays warm this long after the switch, for rollback.")
    ready_timeout: Duration = Field("10m", description="How long a slot may take to load the candidate and report "
                                                       "ready (a rollout, in kubernetes) before the deploy is refused.")


DriftTest = Literal["auto", "ks", "chisquare", "psi", "wasserstein", "jensenshannon"]


class DriftSpec(_Strict):
    features: list[str] | None = Field(
        None, description="Columns judged (default: every model input: the features and request fields).")
    stattest: DriftTest = Field("auto", description="Per-feature test: auto is KS for numbers, chi-square for "
                                                    "categories; psi, wasserstein and jensenshannon are distances.")
    per_feature: dict[str, DriftTest] = Field(default_factory=dict, description="Test overrides by column.")
    correction: Literal["benjamini_hochberg", "bonferroni", "none"] = Field(
        "benjamini_hochberg", description="Multiple-testing correction over the features' p-values.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Significance after correction (FDR or family-wise).")
    effect_size_floor: float = Field(0.1, ge=0, description="A feature drifts only if its effect size (PSI, "
                                                             "normed Wasserstein, JS distance) is at least this.")
    drift_share: float = Field(0.0, ge=0, lt=1, description="Dataset drift when more than this share of the "
                                                            "judged features drift (0: any one feature).")
    min_samples: int = Field(500, ge=10, description="Fewer current rows than this: no verdict (passed, said so).")
    sample_size: int = Field(50_000, ge=1000, description="Rows sampled from each side for the statistic.")
    prediction_drift: bool = Field(True, description="Also judge the served scores against the reference scores.")


class MonitoredQualitySpec(_Strict):
    action: Literal["retrain", "alert", "block"] = Field(
        "block", description="What a landed interval failing its suite does: request a retrain, alert only, or "
                             "block training on it until a person acknowledges it in Airflow.")
    max_null_fraction: float = Field(0.0, ge=0, le=1, description="Largest share of nulls in a required field.")
    freshness: Duration = Field("2h", description="The newest landed event may lag the interval's end by this.")
    volume_tolerance: float = Field(0.5, gt=0, le=10, description="Row count may differ from the median of recent "
                                                                  "intervals by this share.")
    volume_history: int = Field(7, ge=1, description="How many earlier intervals form the volume norm.")


class PerformanceSpec(_Strict):
    metric: Literal["pr_auc", "recall_at_threshold"] = Field("pr_auc", description="Realized metric compared.")
    max_decay: float = Field(0.2, ge=0, le=1, description="Relative drop below the champion's holdout figure "
                                                          "that requests a retrain, once even the realized "
                                                          "metric's bootstrap upper bound is that far below.")
    min_positives: int = Field(20, ge=1, description="Fewer matured positives than this: no verdict.")
    window: Duration = Field("7d", description="Predictions judged: those whose label matured in the last window "
                                               "(or the monitored interval, if longer) before the interval's end.")


class AlertChannel(_Strict):
    kind: Literal["email", "slack", "webhook"]
    to: list[str] = Field(default_factory=list, description="E-mail recipients (kind email).")
    url: str | None = Field(None, description="Webhook URL, or the Airflow connection id holding it (slack, webhook).")
    on: list[Literal["drift", "quality", "performance", "gate_refused", "rollback", "task_failed"]] = Field(
        default_factory=lambda: ["drift", "quality", "performance", "gate_refused", "rollback", "task_failed"])


class MonitoringSpec(_Strict):
    schedule: str = Field("@hourly", description="How often the monitor DAG judges the last interval.")
    drift: DriftSpec = DriftSpec()
    quality: MonitoredQualitySpec = MonitoredQualitySpec()
    performance: PerformanceSpec = PerformanceSpec()
    alerts: list[AlertChannel] = Field(default_factory=list)


class PipelineSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    owner: str = "ml-platform"
    primary: str = Field(description="Name of the event stream the model scores (one row per event).")
    events: dict[str, EventSpec]
    labels: LabelSpec
    ingest: IngestSpec = IngestSpec()
    simulator: SimulatorSpec | None = None
    features: FeaturesSpec | None = None
    model: ModelSpec = ModelSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    gate: GateSpec = GateSpec()
    quality: QualitySpec = QualitySpec()
    retrain: RetrainSpec = RetrainSpec()
    serving: ServingSpec = ServingSpec()
    deploy: DeploySpec = DeploySpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="after")
    def _cross_refs(self) -> PipelineSpec:
        if self.primary not in self.events:
            raise ValueError(f"primary {self.primary!r} is not one of the events ({', '.join(self.events)})")
        if self.labels.events not in self.events:
            raise ValueError(
                f"labels.events {self.labels.events!r} is not one of the events ({', '.join(self.events)})")
        for stream in (self.primary, self.labels.events):
            if self.labels.join_key not in self.events[stream].fields:
                raise ValueError(f"labels.join_key {self.labels.join_key!r} is not a field of events.{stream}")
        if self.serving.predictions is not None and self.serving.predictions not in self.events:
            raise ValueError(f"serving.predictions {self.serving.predictions!r} is not one of the events "
                             f"({', '.join(self.events)})")
        topics = [e.topic for e in self.events.values()]
        if len(set(topics)) != len(topics):
            raise ValueError(f"two event streams share a topic: {topics}")
        if self.features is not None:
            self._check_features(self.features)
        self._check_model()
        if not self.ingest.consumer_group:
            group = self.ingest.model_copy(update={"consumer_group": f"ctloop-lander-{self.name}"})
            object.__setattr__(self, "ingest", group)
        return self

    def _check_features(self, features: FeaturesSpec) -> None:
        """Cross-check names so a bad feature definition fails at load time, naming itself."""
        primary = self.events[self.primary]
        seen: dict[str, str] = {}
        for name, entity in features.entities.items():
            if entity.join_key not in primary.fields:
                raise ValueError(f"features.entities.{name}.join_key: {entity.join_key!r} is not a field of "
                                 f"events.{self.primary} ({', '.join(primary.fields)})")
        for view_name, view in features.views.items():
            where = f"features.views.{view_name}"
            if view.entity not in features.entities:
                raise ValueError(f"{where}.entity: {view.entity!r} is not one of features.entities "
                                 f"({', '.join(features.entities)})")
            if view.source not in self.events:
                raise ValueError(f"{where}.source: {view.source!r} is not one of the events ({', '.join(self.events)})")
            fields = self.events[view.source].fields
            for i, agg in enumerate(view.aggregations):
                if agg.column is not None:
                    if agg.column not in fields:
                        raise ValueError(f"{where}.aggregations[{i}].column: {agg.column!r} is not a field of "
                                         f"events.{view.source} ({', '.join(fields)})")
                    numeric = fields[agg.column].type in ("int", "double")
                    if agg.function in ("sum", "mean", "min", "max") and not numeric:
                        raise ValueError(f"{where}.aggregations[{i}].column: {agg.function} needs a number, "
                                         f"{agg.column!r} is {fields[agg.column].type}")
                if agg.function == "label_rate" and view.source != self.primary:
                    raise ValueError(f"{where}.aggregations[{i}].function: label_rate needs source {self.primary!r}")
            for feature in view.feature_types:
                if feature in seen:
                    raise ValueError(f"{where}: feature {feature!r} is also defined in features.views.{seen[feature]}")
                if feature in self.events[self.primary].fields or feature == self.labels.target:
                    raise ValueError(f"{where}: feature {feature!r} clashes with a field or the label")
                seen[feature] = view_name

    def _check_model(self) -> None:
        fields = self.events[self.primary].fields
        for i, name in enumerate(self.model.request_fields):
            if name not in fields:
                raise ValueError(f"model.request_fields[{i}]: {name!r} is not a field of events.{self.primary} "
                                 f"({', '.join(fields)})")
            if fields[name].type not in ("string", "int", "double", "bool"):
                raise ValueError(f"model.request_fields[{i}]: {name!r} is a {fields[name].type}; "
                                 "the model reads strings, numbers and bools")
        for i, cut in enumerate(self.evaluation.slices):
            if cut.field not in fields:
                raise ValueError(f"evaluation.slices[{i}].field: {cut.field!r} is not a field of "
                                 f"events.{self.primary} ({', '.join(fields)})")
            numeric = fields[cut.field].type in ("int", "double")
            if cut.equals is None and not numeric:
                raise ValueError(f"evaluation.slices[{i}]: min/max need a number, {cut.field!r} is "
                                 f"{fields[cut.field].type}")
        names = [c.name for c in self.evaluation.slices]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation.slices: names repeat: {names}")
        if duration_seconds(self.retrain.merge_window) > duration_seconds(self.retrain.cooldown):
            raise ValueError("retrain.merge_window: must not be longer than retrain.cooldown")

    @property
    def registered_model(self) -> str:
        return self.model.registered_name or f"ctloop-{self.name}"

    @property
    def feature_columns(self) -> dict[str, str]:
        """The model's inputs, in order, with their types: what the feature service serves."""
        if self.features is None:
            return {}
        return {name: dtype for view in self.features.views.values() for name, dtype in view.feature_types.items()}

    @property
    def feature_service(self) -> str:
        return (self.features.service if self.features and self.features.service else f"{self.name}_model")

    @property
    def spec_hash(self) -> str:
        """Content hash of the parsed spec: lineage tags carry it so every artifact names its spec."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def stream_for_topic(self, topic: str) -> tuple[str, EventSpec]:
        for name, event in self.events.items():
            if event.topic == topic:
                return name, event
        raise KeyError(f"pipeline {self.name!r} has no event stream on topic {topic!r}")


def _describe(err: dict[str, Any]) -> str:
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against docs/pipeline-spec.md)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
        msg = f"{msg}; got {err['input']!r}"
    return f"{field}: {msg}"


def parse_spec(data: Any, source: str) -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise SpecError(f"{source}: invalid pipeline spec:\n  {problems}") from None


def load_spec(pipeline: str, pipelines_dir: Path) -> PipelineSpec:
    """Load a spec by pipeline name (``pipelines/<name>.yaml``) or by path."""
    path = Path(pipeline) if pipeline.endswith((".yaml", ".yml")) else pipelines_dir / f"{pipeline}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in pipelines_dir.glob("*.yaml")) if pipelines_dir.is_dir() else []
        raise SpecError(f"{path}: no such pipeline spec "
                        f"(known pipelines in {pipelines_dir}: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: expected {path.stem!r} (the file's name), got {spec.name!r}")
    return spec
