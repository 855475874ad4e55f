"""Score rows in-process: the registered model called directly, on features from Feast's online store.

The server scores every batch through ``Scorer.score_batch``; ``Scorer.score_rows`` is the same work
without HTTP (the baseline of the serving benchmark). What it does per batch:

1. one online lookup for every row that did not bring its features (``get_online_features`` on the
   pipeline's feature service, all rows at once), with each view's row age;
2. the model inputs built by training's own code (``ctloop.training.model.to_inputs``: strings as
   they are, numbers as float32 with missing as NaN, which the model reads as missing);
3. one direct call of the Keras model on tensors (``model(inputs, training=False)``, traced once by
   ``tf.function`` for any batch size). ``model.predict``, which the pyfunc uses, sets up a data
   pipeline on every call and costs milliseconds; the scores are the same (tested to 1e-6).

The model comes from the registry as files, not through pyfunc: the version's ``artifacts/model.keras``
(loaded in Keras' safe mode) and ``artifacts/inputs.json`` (its input kinds: an older model keeps its
own inputs). The decision threshold is ``serving.threshold``, else the version's ``ctloop.threshold``
tag (``ctloop evaluate`` chose it for ``evaluation.precision_target``), else 0.5, said on stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.serving.protocol import Signature

if TYPE_CHECKING:
    from ctloop.serving.metrics import ServingMetrics

DEFAULT_ALIAS = "champion"
FALLBACK_THRESHOLD = 0.5


@dataclass
class Scored:
    """A batch's scores and decisions, and every model input as served (for the prediction log)."""

    scores: np.ndarray
    decisions: np.ndarray
    columns: dict[str, list[Any]]

    def served(self, row: int) -> dict[str, Any]:
        """Row ``row``'s model inputs as the model saw them (a missing number as None)."""
        return {name: _plain(values[row]) for name, values in self.columns.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if value != value else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def resolve_version(settings: Settings, model: str, *, version: str | None, alias: str | None) -> Any:
    """The registry's ModelVersion for ``version``, or for ``alias`` (``champion`` when neither is given)."""
    from mlflow.exceptions import MlflowException

    from ctloop.registry.aliases import client

    if version and alias:
        raise ValueError("give a model version or an alias, not both")
    mlflow_client = client(settings)
    try:
        if version:
            return mlflow_client.get_model_version(model, str(version))
        return mlflow_client.get_model_version_by_alias(model, alias or DEFAULT_ALIAS)
    except MlflowException as exc:
        what = f"version {version}" if version else f"alias {alias or DEFAULT_ALIAS!r}"
        raise ValueError(f"model {model!r} has no {what} in the registry at {settings.mlflow_tracking_uri} "
                         f"({exc.message.splitlines()[0]})") from None


class Scorer:
    """One registered model version and the pipeline's online store, ready to score rows."""

    def __init__(self, spec: PipelineSpec, settings: Settings, *, version: str | None = None,
                 alias: str | None = None, store: Any = None, metrics: ServingMetrics | None = None) -> None:
        import mlflow

        self.spec, self.settings, self.metrics = spec, settings, metrics
        self.model_name = spec.registered_model
        self.alias = None if version else (alias or DEFAULT_ALIAS)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        model_version = resolve_version(settings, self.model_name, version=version, alias=alias)
        self.version = str(model_version.version)
        self.run_id = model_version.run_id
        started = time.monotonic()
        self._download = tempfile.TemporaryDirectory(prefix="ctloop-serving-")
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.model_name}/{self.version}",
                                                         dst_path=self._download.name))
        self.kinds: dict[str, str] = json.loads((local / "artifacts" / "inputs.json").read_text())
        self.signature = Signature(spec, self.kinds)
        self.model = _load_keras(local / "artifacts" / "model.keras")
        self._call = _traced_call(self.model, self.kinds)
        self.threshold, self.threshold_source = self._threshold(model_version.tags or {})
        self.store = store if store is not None else _open_store(spec, settings)
        self._lookup_setup()
        self._call(self._inputs({name: [None] for name in self.kinds}))  # trace now, not on the first request
        _log(f"loaded {self.model_name} v{self.version}"
             + (f" (@{self.alias})" if self.alias else "")
             + f" in {time.monotonic() - started:.1f}s; threshold {self.threshold:g} ({self.threshold_source}); "
             f"features from {spec.feature_service!r} ({len(self.signature.features)} features)")

    # -- public -----------------------------------------------------------------------------------------
    def score_rows(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Scores (float64) and decisions (0/1) of ``rows``: request fields and entity keys, and optionally
        every feature (then that row is not looked up)."""
        scored = self.score_batch(rows)
        return scored.scores, scored.decisions

    def score_batch(self, rows: list[dict[str, Any]]) -> Scored:
        """One lookup for the rows without features, one model call for all rows."""
        features = self.signature.features
        columns: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in self.kinds}
        need = []
        for i, row in enumerate(rows):
            given = sum(name in row for name in features)
            if given == 0:
                need.append(i)
            elif given != len(features):
                missing = [name for name in features if name not in row]
                raise ValueError(f"row {i}: give every feature or none; missing {missing}")
        if need and features:
            found = self.lookup([rows[i] for i in need])
            for name in features:
                column, values = columns[name], found[name]
                for j, i in enumerate(need):
                    column[i] = values[j]
        started = time.perf_counter()
        scores = self._call(self._inputs(columns)).numpy().ravel().astype("float64")
        if self.metrics is not None:
            self.metrics.model_seconds.observe(time.perf_counter() - started)
        decisions = (scores >= self.threshold).astype("int64")
        return Scored(scores, decisions, columns)

    def lookup(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """The online features of ``rows`` (by their entity keys), one Feast call; feature name → values."""
        started = time.perf_counter()
        entity_rows = [{key: row[key] for key in self.signature.entity_keys} for row in rows]
        response = self.store.get_online_features(features=self._service, entity_rows=entity_rows)
        found = response.to_dict(include_event_timestamps=self.metrics is not None)
        if self.metrics is not None:
            self.metrics.lookup_seconds.observe(time.perf_counter() - started)
            now = time.time()
            for view, feature in self._age_feature.items():
                stamps = found.get(f"{feature}__ts", [])
                ages = [now - ts for ts, v in zip(stamps, found[feature], strict=False) if ts and v is not None]
                histogram = self.metrics.feature_age.labels(view)
                for age in ages:
                    histogram.observe(max(age, 0.0))
                if len(ages) < len(rows):
                    self.metrics.features_missing.labels(view).inc(len(rows) - len(ages))
        return found

    def parameters(self) -> dict[str, Any]:
        return {"registered_model": self.model_name, "version": self.version, "alias": self.alias,
                "threshold": self.threshold, "threshold_source": self.threshold_source, "run_id": self.run_id}

    def close(self) -> None:
        self._download.cleanup()

    # -- setup ------------------------------------------------------------------------------------------
    def _threshold(self, tags: dict[str, str]) -> tuple[float, str]:
        if self.spec.serving.threshold is not None:
            return self.spec.serving.threshold, "serving.threshold of the spec"
        tag = tags.get("ctloop.threshold")
        if tag:
            return float(tag), f"tag ctloop.threshold of v{self.version}"
        _log(f"{self.model_name} v{self.version} has no ctloop.threshold tag and the spec sets no "
             f"serving.threshold: deciding at {FALLBACK_THRESHOLD}")
        return FALLBACK_THRESHOLD, "fallback (no serving.threshold, no ctloop.threshold tag)"

    def _lookup_setup(self) -> None:
        features = self.signature.features
        self._service = None
        self._age_feature: dict[str, str] = {}
        if not features:
            return
        try:
            self._service = self.store.get_feature_service(self.spec.feature_service)
        except Exception as exc:  # noqa: BLE001 - Feast raises its own not-found types
            raise ValueError(f"Feast has no feature service {self.spec.feature_service!r} in its registry "
                             f"({self.settings.feast_registry}): materialize the pipeline's features first "
                             f"(`ctloop materialize`): {exc}") from None
        assert self.spec.features is not None
        for view_name, view in self.spec.features.views.items():
            mine = [f for f in view.feature_types if f in features]
            if mine:
                self._age_feature[view_name] = mine[0]

    def _inputs(self, columns: dict[str, list[Any]]) -> dict[str, Any]:
        import tensorflow as tf

        from ctloop.training.model import to_inputs

        arrays = to_inputs(self.kinds, columns)
        return {name: tf.constant(array, dtype=tf.string if self.kinds[name] == "string" else tf.float32)
                for name, array in arrays.items()}


def _load_keras(path: Path) -> Any:
    import keras

    import ctloop.training.model  # noqa: F401  (registers the custom preprocessing layers)

    return keras.saving.load_model(path)  # safe mode: no serialized lambdas


def _traced_call(model: Any, kinds: dict[str, str]) -> Any:
    """``model(inputs, training=False)`` traced once for (n, 1) inputs of any n, as the concrete function: calling
    it skips the polymorphic function's per-call signature matching (about half a millisecond a call here)."""
    import tensorflow as tf

    signature = {name: tf.TensorSpec([None, 1], tf.string if kind == "string" else tf.float32, name=name)
                 for name, kind in kinds.items()}

    @tf.function(input_signature=[signature], reduce_retracing=True)
    def call(inputs: dict[str, Any]) -> Any:
        return model(inputs, training=False)

    return call.get_concrete_function()


def _open_store(spec: PipelineSpec, settings: Settings) -> Any:
    from ctloop.features.store import open_store

    return open_store(settings, spec, apply=False)


def _log(message: str) -> None:
    print(f"[serving] {message}", file=sys.stderr, flush=True)
