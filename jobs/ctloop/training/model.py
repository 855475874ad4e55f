"""The default model of a pipeline, built from its spec, with the preprocessing inside the model.

Inputs are the feature service's features plus ``model.request_fields``, one named Keras input each.
Numbers get a missing-value flag, a signed ``log1p`` and a ``Normalization`` adapted on the training
rows; strings a ``StringLookup`` learned from them. The saved model therefore carries everything
serving must apply, and a pipeline that needs another architecture names its own builder in the spec.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from ctloop.config.spec import PipelineSpec, SpecError

MAX_ONE_HOT = 64  # larger vocabularies are embedded


@keras.saving.register_keras_serializable(package="ctloop")
class NumericPrep(keras.layers.Layer):
    """``x`` → ``[sign(x)·log1p(|x|), isnan(x)]`` with NaN read as 0: fraud amounts and counts are heavy-tailed,
    and a feature Feast could not find (TTL passed, new entity) is information, not an error."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        missing = keras.ops.isnan(x)
        x = keras.ops.where(missing, keras.ops.zeros_like(x), x)
        return keras.ops.concatenate([keras.ops.sign(x) * keras.ops.log1p(keras.ops.abs(x)),
                                      keras.ops.cast(missing, "float32")], axis=-1)


def input_kinds(spec: PipelineSpec) -> dict[str, str]:
    """Every model input and its kind (``number`` or ``string``), features first, in spec order."""
    fields = spec.events[spec.primary].fields
    kinds = {name: "number" for name in spec.feature_columns}
    for name in spec.model.request_fields:
        kinds[name] = "string" if fields[name].type == "string" else "number"
    return kinds


def to_inputs(kinds: dict[str, str], frame: pd.DataFrame | Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """The columns as named model inputs, shaped (n, 1): strings as objects (null → ""), numbers as float32
    (null or not a number → NaN, which the model reads as missing). ``frame`` is a DataFrame (training,
    evaluation) or a mapping of column lists (serving: a few rows, where building a DataFrame would cost
    more than the model call); both give the same arrays."""
    missing = [c for c in kinds if c not in frame]
    if missing:
        raise ValueError(f"the data lacks model inputs {missing} (the model reads {list(kinds)})")
    out = {}
    for name, kind in kinds.items():
        column = frame[name]
        if not isinstance(column, pd.Series):
            out[name] = _list_input(column, kind)
        elif kind == "string":
            out[name] = column.astype("string").fillna("").to_numpy(dtype=object).reshape(-1, 1)
        else:
            out[name] = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float32").reshape(-1, 1)
    return out


def _list_input(values: Sequence[Any], kind: str) -> np.ndarray:
    if kind == "string":
        return np.array([["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)]
                         for v in values], dtype=object).reshape(-1, 1)
    if all(v is None or (isinstance(v, int | float | np.number) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype="float32").reshape(-1, 1)
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    return numbers.to_numpy(dtype="float32").reshape(-1, 1)


def score(model: keras.Model, kinds: dict[str, str], frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
    """The model's scores for the frame's rows (through tf.data: Keras cannot take string arrays directly)."""
    import tensorflow as tf

    if len(frame) == 0:
        return np.zeros(0, dtype="float64")
    data = tf.data.Dataset.from_tensor_slices(to_inputs(kinds, frame)).batch(batch_size)
    return model.predict(data, verbose=0).ravel().astype("float64")


def build_model(spec: PipelineSpec, train: pd.DataFrame) -> keras.Model:
    """Dense network over the spec's inputs; preprocessing layers are adapted on ``train``."""
    kinds = input_kinds(spec)
    arrays = to_inputs(kinds, train)
    inputs, encoded = {}, []
    for name, kind in kinds.items():
        if kind == "string":
            inp = keras.Input(shape=(1,), dtype="string", name=name)
            vocabulary = sorted({v for v in arrays[name].ravel() if v})
            if len(vocabulary) + 1 <= MAX_ONE_HOT:
                lookup = keras.layers.StringLookup(vocabulary=vocabulary, output_mode="one_hot", name=f"{name}_lookup")
                encoded.append(lookup(inp))
            else:
                lookup = keras.layers.StringLookup(vocabulary=vocabulary, name=f"{name}_lookup")
                embedded = keras.layers.Embedding(len(vocabulary) + 1, 8, name=f"{name}_embedding")(lookup(inp))
                encoded.append(keras.layers.Flatten()(embedded))
        else:
            inp = keras.Input(shape=(1,), dtype="float32", name=name)
            prep = NumericPrep(name=f"{name}_prep")
            norm = keras.layers.Normalization(name=f"{name}_norm")
            norm.adapt(keras.ops.convert_to_numpy(prep(arrays[name])))
            encoded.append(norm(prep(inp)))
        inputs[name] = inp
    x = keras.layers.Concatenate(name="all_inputs")(encoded)
    for i, units in enumerate(spec.model.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if spec.model.dropout:
            x = keras.layers.Dropout(spec.model.dropout, name=f"dropout_{i}")(x)
    # float32 output even under mixed precision, so scores and the loss stay numerically sound
    output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="score")(x)
    return keras.Model(inputs=inputs, outputs=output, name=f"{spec.name}_model")


def load_builder(spec: PipelineSpec) -> Callable[[PipelineSpec, pd.DataFrame], keras.Model]:
    module_name, _, attr = spec.model.builder.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"pipeline {spec.name!r}: model.builder: cannot import {spec.model.builder!r}: {exc}") from None
    if not callable(builder):
        raise SpecError(f"pipeline {spec.name!r}: model.builder: {spec.model.builder!r} is not callable")
    return builder
