"""The logged model as an MLflow pyfunc: a table of request fields and features in, a ``score`` column out.

MLflow's Keras flavour feeds a model one array; ctloop models take named, typed inputs (strings
among them), so the pyfunc wrapper turns a DataFrame into those inputs with the input kinds saved
next to the model, not read from today's spec: an older champion still scores with its own inputs.

The model is logged from code (``MODEL_CODE``, see ``pyfunc_code``), never as a pickled object:
loading it imports this class from the installed package, loads the ``.keras`` file (Keras'
safe mode, so no serialized lambdas) and reads the input kinds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

MODEL_CODE = Path(__file__).with_name("pyfunc_code.py")  # what log_pyfunc hands to MLflow as the model


class KerasScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import keras

        import ctloop.training.model  # noqa: F401  (registers the custom preprocessing layers)

        self.model = keras.saving.load_model(context.artifacts["keras_model"])
        with open(context.artifacts["inputs"]) as fh:
            self.kinds: dict[str, str] = json.load(fh)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from ctloop.training.model import score

        return pd.DataFrame({"score": score(self.model, self.kinds, model_input)}, index=model_input.index)
