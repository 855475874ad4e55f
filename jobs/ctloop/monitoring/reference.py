"""The reference a monitored interval is judged against: the champion's training snapshot, and its scores.

Every registered version carries the MLflow tag ``ctloop.snapshot_id`` (its lineage, from ``ctloop
train``), so "the data the champion learned from" is one registry lookup away; ``--reference SNAPSHOT``
names another snapshot instead (the champion still scores it). The rows are the snapshot's model inputs,
sampled to ``monitoring.drift.sample_size``.

The reference *scores*, for prediction drift, are the champion's scores of that same sample, computed
by loading the registered model as serving does (pyfunc) and kept in the lake per snapshot and version,
so only the first interval judged against a new champion pays for loading it. Not the holdout scores
of the evaluation: the holdout is the snapshot's last days only, and the drift check compares
against the whole snapshot.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.lake.paths import reference_scores_path
from ctloop.lake.store import Lake
from ctloop.monitoring.drift import sample
from ctloop.training.training_set import load_snapshot

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Reference:
    """A reference sample and the model that judges the interval (the champion, when there is one)."""

    snapshot_id: str
    frame: pd.DataFrame
    source: str
    model: str
    version: str | None = None
    run_id: str | None = None
    _scores: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "source": self.source, "model": self.model,
                "version": self.version, "run_id": self.run_id, "rows": len(self.frame)}

    def scores(self, spec: PipelineSpec, settings: Settings, lake: Lake) -> Any:
        """The champion's scores of the reference sample (None without a champion), from the lake once computed."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.version is None:
            return None
        if self._scores is not None:
            return self._scores
        path = reference_scores_path(spec.name, self.snapshot_id, self.version)
        if lake.exists(path):
            self._scores = pq.read_table(pa.BufferReader(lake.read(path))).column("score").to_numpy()
            return self._scores
        import mlflow

        print(f"[monitor] scoring the {len(self.frame):,}-row reference sample with {self.model} v{self.version}",
              file=sys.stderr, flush=True)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{self.model}/{self.version}")
        inputs = [*spec.feature_columns, *spec.model.request_fields]  # what the model reads, in its order
        self._scores = model.predict(self.frame[inputs])["score"].to_numpy(dtype="float64")
        sink = io.BytesIO()
        pq.write_table(pa.table({"score": self._scores}), sink)
        lake.write(path, sink.getvalue())
        return self._scores


def _check_reachable(uri: str, timeout_s: float = 10) -> None:
    """Fail in seconds, naming the URI, when the tracking server does not answer: MLflow's client retries an
    unreachable server for minutes, which would hold the hourly monitor run (one at a time) that long."""
    import httpx

    if not uri.startswith(("http://", "https://")):
        return
    try:
        httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ValueError(f"MLflow at {uri} does not answer ({type(exc).__name__}: {exc}): the monitor needs the "
                         "registry to find the champion and its reference (CTLOOP_MLFLOW_TRACKING_URI; locally "
                         "`ctloop stack up`)") from None


def resolve(spec: PipelineSpec, settings: Settings, lake: Lake, snapshot: str | None = None) -> Reference | str:
    """The reference: ``snapshot`` if given, else the champion's training snapshot; a reason when there is none."""
    from mlflow.exceptions import MlflowException

    from ctloop.registry.aliases import client, current_version

    name = spec.registered_model
    _check_reachable(settings.mlflow_tracking_uri)
    mlflow_client = client(settings)
    try:  # an unreachable registry is an error, not "no champion": the check must not pass for want of MLflow
        mlflow_client.get_registered_model(name)
        version = current_version(mlflow_client, name, "champion")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        version = None
    run_id, source = None, f"--reference {snapshot}"
    if version is not None:
        registered = mlflow_client.get_model_version(name, version)
        run_id = registered.run_id
        if snapshot is None:
            snapshot = (registered.tags or {}).get("ctloop.snapshot_id")
            source = f"champion v{version}'s training snapshot"
            if not snapshot:
                return f"champion v{version} has no ctloop.snapshot_id tag (registered by hand?): give --reference"
    elif snapshot is None:
        return f"no champion of {name} yet, and no --reference snapshot"
    _, frame = load_snapshot(lake, spec, snapshot)
    keep = [c for c in (*spec.feature_columns, *spec.model.request_fields) if c in frame.columns]
    frame = sample(frame[keep], spec.monitoring.drift.sample_size).reset_index(drop=True)
    return Reference(snapshot, frame, source, name, version, run_id)
