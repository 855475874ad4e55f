"""``ctloop train``: fit the pipeline's Keras model on a training-set snapshot and log it to MLflow.

Seeded and deterministic (same snapshot and seed, same weights); every GPU it sees through a
``MirroredStrategy``, CPU otherwise; class imbalance through class weights and an output bias set to
the base rate; early stopping on validation PR-AUC. The run carries its lineage as tags, so any
registered version leads back to the snapshot, the Kafka offsets, the spec and the code it came from.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.lake.store import Lake
from ctloop.training.training_set import load_snapshot, split_by_time

MODEL_NAME = "model"  # the logged model's name inside its run


def code_version(settings: Settings) -> str:
    if settings.code_version:
        return settings.code_version
    import ctloop

    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(ctloop.__file__).parent, check=True).stdout.strip()
        return f"git:{sha}"
    except (OSError, subprocess.SubprocessError):
        return f"ctloop {ctloop.__version__}"


def compact_offsets(sources: dict[str, Any]) -> str:
    """``topic[partition:first-last,…]`` per source stream: short enough for a tag, exact enough to replay."""
    parts = []
    for source in sources.values():
        spans = ",".join(f"{p}:{o['first']}-{o['last']}" for p, o in source.get("offsets", {}).items())
        parts.append(f"{source['topic']}[{spans}]")
    return "; ".join(parts)


def lineage_tags(spec: PipelineSpec, settings: Settings, manifest: dict[str, Any]) -> dict[str, str]:
    return {
        "ctloop.pipeline": spec.name,
        "ctloop.snapshot_id": manifest["snapshot_id"],
        "ctloop.snapshot_uri": manifest["data"],
        "ctloop.data_interval": f"{manifest['start']}/{manifest['end']}",
        "ctloop.labels_as_of": manifest["labels_as_of"],
        "ctloop.source_offsets": compact_offsets(manifest["sources"]),
        "ctloop.feature_service": manifest["feature_service"],
        "ctloop.spec_hash": spec.spec_hash,
        "ctloop.snapshot_spec_hash": manifest["spec_hash"],
        "ctloop.code_version": code_version(settings),
    }


def experiment_name(spec: PipelineSpec, settings: Settings) -> str:
    return settings.mlflow_experiment.format(pipeline=spec.name)


def _configure_tensorflow(seed: int, mixed_precision: bool) -> tuple[Any, dict[str, Any]]:
    """Seeds and deterministic ops; the distribution strategy over every visible GPU (or the CPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    policy = "mixed_float16" if (mixed_precision and gpus) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return strategy, {"device": f"{len(gpus)} GPU" if gpus else "CPU", "replicas": strategy.num_replicas_in_sync,
                      "strategy": type(strategy).__name__, "precision_policy": policy}


def _dataset(inputs: dict[str, Any], labels: Any, batch_size: int, seed: int | None) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit(spec: PipelineSpec, settings: Settings, train_df: Any, val_df: Any,
        callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Build, compile and fit the model; returns it (best weights restored) and what the fit did."""
    import keras
    import numpy as np

    from ctloop.training.model import input_kinds, load_builder, to_inputs

    m = spec.model
    strategy, device = _configure_tensorflow(m.seed, settings.mixed_precision)
    target = spec.labels.target
    y_train = train_df[target].to_numpy(dtype="float32")
    positives = float(y_train.sum())
    negatives = len(y_train) - positives
    # weight positives by the square root of the imbalance: enough to learn the rare class without
    # pushing every score up as full reweighting does (the gate reads calibration too)
    class_weight = {0: 1.0, 1: math.sqrt(negatives / positives)}
    with strategy.scope():
        model = load_builder(spec)(spec, train_df)
        if not getattr(model, "compiled", False):
            model.compile(optimizer=keras.optimizers.Adam(m.learning_rate), loss="binary_crossentropy",
                          metrics=[keras.metrics.AUC(curve="PR", name="pr_auc"), keras.metrics.AUC(name="roc_auc")])
        score = next((layer for layer in model.layers if layer.name == "score"), None)
        if getattr(score, "bias", None) is not None:
            score.bias.assign(np.full(score.bias.shape, math.log(positives / negatives), dtype="float32"))
    kinds = input_kinds(spec)
    train_data = _dataset(to_inputs(kinds, train_df), y_train, m.batch_size, m.seed)
    val_data = _dataset(to_inputs(kinds, val_df), val_df[target].to_numpy(dtype="float32"), m.batch_size, None)
    stop = keras.callbacks.EarlyStopping(monitor="val_pr_auc", mode="max", patience=m.patience,
                                         restore_best_weights=True)
    started = time.monotonic()
    history = model.fit(train_data, validation_data=val_data, epochs=m.max_epochs, class_weight=class_weight,
                        shuffle=False, callbacks=[stop, *(callbacks or [])], verbose=0)
    seconds = time.monotonic() - started
    epochs = len(history.history["loss"])
    best = int(np.argmax(history.history["val_pr_auc"]))
    return model, {**device, "epochs": epochs, "best_epoch": best + 1, "fit_seconds": round(seconds, 2),
                   "examples_per_s": round(epochs * len(train_df) / seconds, 1),
                   "class_weight_positive": round(class_weight[1], 4),
                   "best_val_pr_auc": round(float(history.history["val_pr_auc"][best]), 6)}


def _epoch_logger(total_epochs: int) -> Any:
    """A Keras callback: per-epoch metrics to MLflow and a progress line to stderr (built lazily: Keras is heavy)."""
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            mlflow.log_metrics(logs, step=epoch + 1)
            shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss", "val_pr_auc"))
            print(f"[train] epoch {epoch + 1}/{total_epochs} {shown}", file=sys.stderr, flush=True)

    return EpochLogger()


def log_pyfunc(spec: PipelineSpec, model: Any, example: Any) -> Any:
    """Log the model as a pyfunc with its signature and an input example; returns MLflow's ModelInfo.

    Models from code: MLflow gets the path of ``pyfunc_code.py`` (which sets ``KerasScorer`` as the
    model) and copies that file into the model directory next to the ``.keras`` file and the input
    kinds; no Python object is pickled. The file imports the installed ``ctloop`` package, which
    every image that loads models carries, so no ``code_paths`` are logged.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from ctloop.training.model import input_kinds, score
    from ctloop.training.pyfunc import MODEL_CODE

    kinds = input_kinds(spec)
    output = pd.DataFrame({"score": score(model, kinds, example)})
    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as tmp:
        artifacts = {"keras_model": str(Path(tmp) / "model.keras"), "inputs": str(Path(tmp) / "inputs.json")}
        model.save(artifacts["keras_model"])
        Path(artifacts["inputs"]).write_text(json.dumps(kinds))
        return mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts=artifacts,
                                       signature=infer_signature(example, output), input_example=example,
                                       pip_requirements=_requirements())


def _requirements() -> list[str]:
    """The serving image's pins: the packages the pyfunc imports, at the versions trained with."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "tensorflow", "keras", "pandas", "numpy")]


def input_example(spec: PipelineSpec, frame: Any, rows: int = 5) -> Any:
    from ctloop.training.model import input_kinds

    columns = list(input_kinds(spec))
    complete = frame[columns].dropna()
    return (complete if len(complete) >= rows else frame[columns]).head(rows).reset_index(drop=True)


def train(spec: PipelineSpec, settings: Settings, lake: Lake, snapshot_id: str) -> dict[str, Any]:
    import mlflow

    from ctloop.evaluation.metrics import flat_metrics, metric_table
    from ctloop.training.model import input_kinds, score

    started = time.monotonic()
    manifest, frame = load_snapshot(lake, spec, snapshot_id)
    end = datetime.fromisoformat(manifest["end"])
    train_df, val_df, holdout_df = split_by_time(spec, frame, end)
    print(f"[train] snapshot {snapshot_id}: {len(train_df)} training / {len(val_df)} validation / "
          f"{len(holdout_df)} holdout rows, label rate {manifest['label_rate']}", file=sys.stderr, flush=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(experiment_name(spec, settings))
    tags = lineage_tags(spec, settings, manifest)
    with mlflow.start_run(run_name=f"train-{snapshot_id}", tags=tags) as run:
        m = spec.model
        mlflow.log_params({
            "builder": m.builder, "hidden_units": m.hidden_units, "dropout": m.dropout,
            "learning_rate": m.learning_rate, "batch_size": m.batch_size, "max_epochs": m.max_epochs,
            "patience": m.patience, "seed": m.seed, "inputs": ",".join(input_kinds(spec)),
            "rows_train": len(train_df), "rows_validation": len(val_df), "rows_holdout": len(holdout_df),
            "label_rate": manifest["label_rate"], **{f"builder.{k}": v for k, v in m.params.items()},
        })
        mlflow.log_dict(manifest, "lineage/snapshot_manifest.json")
        model, fitted = fit(spec, settings, train_df, val_df, [_epoch_logger(m.max_epochs)])
        mlflow.log_params({k: fitted[k] for k in ("device", "replicas", "strategy", "precision_policy",
                                                  "class_weight_positive")})
        mlflow.log_metrics({"epochs": fitted["epochs"], "best_epoch": fitted["best_epoch"],
                            "examples_per_s": fitted["examples_per_s"], "fit_seconds": fitted["fit_seconds"]})
        scores = score(model, input_kinds(spec), holdout_df)
        table = metric_table(spec, holdout_df, scores)
        mlflow.log_metrics(flat_metrics(table, "holdout"))
        info = log_pyfunc(spec, model, input_example(spec, holdout_df))
        mlflow.set_tag("ctloop.model_uri", info.model_uri)
        print(f"[train] run {run.info.run_id}: {fitted['epochs']} epochs (best {fitted['best_epoch']}), "
              f"holdout PR-AUC {table['overall']['pr_auc']:.4f}, logged {info.model_uri}", file=sys.stderr, flush=True)
    return {
        "run_id": run.info.run_id, "experiment": experiment_name(spec, settings), "model_uri": info.model_uri,
        "snapshot_id": snapshot_id, "tracking_uri": settings.mlflow_tracking_uri, **fitted,
        "metrics": {k: v for k, v in table["overall"].items()}, "lineage": tags,
        "seconds": round(time.monotonic() - started, 2),
    }
