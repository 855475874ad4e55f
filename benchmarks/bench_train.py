"""Training benchmark: examples/s and wall time of `ctloop train` on a large snapshot, against the time of
loading the same snapshot into memory (the baseline, same run). Prints one JSON line.

The snapshot is synthetic (``synthetic_training_frame``, the reference spec's columns) so the figure
measures training alone, not Spark or Feast. MLflow logs to a local SQLite store: no server needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctloop.config.settings import load_settings  # noqa: E402
from ctloop.config.spec import load_spec  # noqa: E402
from ctloop.lake.store import open_lake  # noqa: E402
from ctloop.sim.simulator import synthetic_training_frame  # noqa: E402
from ctloop.training.model import input_kinds, to_inputs  # noqa: E402
from ctloop.training.training_set import load_snapshot, write_snapshot  # noqa: E402

from benchmarks.machine import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 500_000)))
    parser.add_argument("--epochs", type=int, default=3, help="epochs run (early stopping is held off)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctloop-bench-train-"))
    try:
        settings = load_settings(state_dir=work / "state", mlflow_tracking_uri=f"sqlite:///{work}/mlflow.db",
                                 pipelines_dir=ROOT / "pipelines")
        from mlflow import MlflowClient

        spec = load_spec("fraud", settings.pipelines_dir)
        # artifacts beside the store, not in ./mlruns of whatever folder the benchmark runs from
        MlflowClient(settings.mlflow_tracking_uri).create_experiment(
            settings.mlflow_experiment.format(pipeline=spec.name), artifact_location=(work / "artifacts").as_uri())
        spec = spec.model_copy(update={"model": spec.model.model_copy(
            update={"max_epochs": args.epochs, "patience": args.epochs + 1})})
        lake = open_lake(settings)
        start, days = datetime(2026, 1, 1, tzinfo=UTC), 60
        print(f"[bench-train] writing a {args.rows:,}-row snapshot", file=sys.stderr, flush=True)
        frame = synthetic_training_frame(spec, args.rows, seed=1, start=start, days=days)
        write_snapshot(lake, spec, "bench", frame, start=start, end=start + timedelta(days=days),
                       as_of=start + timedelta(days=days + 30), sources={})
        del frame

        t = time.perf_counter()
        _, loaded = load_snapshot(lake, spec, "bench")
        to_inputs(input_kinds(spec), loaded)
        load_s = time.perf_counter() - t
        del loaded

        from ctloop.training.train import train

        print(f"[bench-train] training {args.epochs} epochs", file=sys.stderr, flush=True)
        t = time.perf_counter()
        result = train(spec, settings, lake, "bench")
        wall_s = time.perf_counter() - t
        print(json.dumps({
            "benchmark": "train", "machine": machine(), "device": result["device"], "rows": args.rows,
            "training_rows": round(result["examples_per_s"] * result["fit_seconds"] / result["epochs"]),
            "epochs": result["epochs"], "examples_per_s": result["examples_per_s"],
            "fit_s": result["fit_seconds"], "train_wall_s": round(wall_s, 2),
            "baseline_load_into_memory_s": round(load_s, 2), "wall_vs_load": round(wall_s / load_s, 1),
            "holdout_pr_auc": round(result["metrics"]["pr_auc"], 4),
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
