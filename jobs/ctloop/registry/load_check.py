"""``python -m ctloop.registry.load_check MODEL_URI``: load a logged model as serving will, predict its example.

Run by ``ctloop register`` in a fresh interpreter; prints one JSON line and exits 0 only when the
pyfunc loads and returns one finite score in [0, 1] per example row.
"""

from __future__ import annotations

import json
import sys


def check(model_uri: str) -> dict[str, object]:
    import mlflow
    import numpy as np
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(model_uri)
    example = Model.load(local).load_input_example(local)
    if example is None:
        raise ValueError(f"{model_uri} was logged without an input example")
    scores = mlflow.pyfunc.load_model(local).predict(example)["score"].to_numpy()
    if len(scores) != len(example) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise ValueError(f"{model_uri}: expected {len(example)} scores in [0, 1], got {scores.tolist()}")
    return {"model_uri": model_uri, "rows": len(example), "scores": [round(float(s), 6) for s in scores]}


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
