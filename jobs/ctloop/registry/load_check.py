"""``python -m ctloop.registry.load_check MODEL_URI``: load a logged model as serving will, predict its example.

Run by ``ctloop register`` in a fresh interpreter; prints one JSON line and exits 0 only when the
pyfunc loads and returns one finite score in [0, 1] per example row. A model logged as a pickled
Python object (no model code in its ``MLmodel``) is refused before anything of it is loaded, and the
command runs with MLflow's pickle deserialization off, as serving does
(``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``).
"""

from __future__ import annotations

import json
import os
import sys


def check(model_uri: str) -> dict[str, object]:
    import mlflow
    import numpy as np
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(model_uri)
    model = Model.load(local)
    if not model.flavors.get("python_function", {}).get("model_code_path"):
        raise ValueError(f"{model_uri} is a pickled pyfunc, not a model from code: ctloop loads no pickled model")
    example = model.load_input_example(local)
    if example is None:
        raise ValueError(f"{model_uri} was logged without an input example")
    scores = mlflow.pyfunc.load_model(local).predict(example)["score"].to_numpy()
    if len(scores) != len(example) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise ValueError(f"{model_uri}: expected {len(example)} scores in [0, 1], got {scores.tolist()}")
    return {"model_uri": model_uri, "rows": len(example), "scores": [round(float(s), 6) for s in scores]}


if __name__ == "__main__":
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    print(json.dumps(check(sys.argv[1])))
