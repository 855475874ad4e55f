"""`ctloop demo` as a user runs it, through Airflow from landing to a registered model, and a job's input
error (exit 2). The jobs' idempotence is tested in test_features_spark.py and test_features_feast.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ctloop.stack.service import free_port

from tests.conftest import make_pipeline, settings_env, settings_for

CTLOOP = Path(sys.executable).parent / "ctloop"


def test_demo_drives_the_loop_through_airflow_to_a_registered_challenger(tmp_path: Path) -> None:
    """`ctloop demo` on a private stack (broker, MLflow, Airflow, the serving switch): DAG runs only, no direct job
    calls; the registered model is deployed by the train run and serves through the switch."""
    pipelines, _ = make_pipeline(tmp_path, **{
        "simulator.params.days": 3, "simulator.params.fraud_rate": 0.05, "simulator.params.max_label_delay_days": 1,
        "labels.maturity_days": 1, "quality.min_rows": 200, "evaluation.holdout_days": "12h",
        "model.validation_days": "12h", "model.max_epochs": 3, "gate.floors": {"roc_auc": 0.5}})
    port = free_port()
    settings = settings_for(tmp_path, f"127.0.0.1:{port}", pipelines, broker_port=port, mlflow_port=free_port(),
                            airflow_port=free_port(), serving_port=free_port(), spark_master="local[2]",
                            spark_shuffle_partitions=4)
    env = settings_env(settings)

    def ctloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CTLOOP), *args], env=env, capture_output=True, text=True, timeout=900, check=False)

    try:
        demo = ctloop("demo", "--pipeline", "fraud", "--events", "4000", "--bad-fraction", "0.01")
        assert demo.returncode == 0, demo.stderr[-3000:]
        summary = json.loads(demo.stdout)
        assert summary == json.loads((settings.state_dir / "demo-summary.json").read_text())
        produced = sum(sum(counts.values()) for counts in summary["produced"].values())
        assert summary["landed"]["landed"] + summary["landed"]["dead_letters"] == produced
        runs = summary["dag_runs"]
        assert runs["ingest"] and runs["features"] and runs["train"]
        assert {r["state"] for rs in runs.values() for r in rs} == {"success"}
        notes = "\n".join(r["note"] or "" for r in runs["train"])
        assert "retrain accepted" in notes and "data quality passed" in notes and "registered" in notes
        assert "deployed v1: traffic switched to blue" in notes
        assert summary["gate"]["passed"] and summary["model"]["challenger"]
        # newest first: champion only after the watch, live at the switch, challenger at registration
        assert [m["alias"] for m in summary["model"]["alias_moves"]][:3] == ["champion", "live", "challenger"]
        assert summary["deploy"]["outcome"] == "promoted" and summary["model"]["champion"] == "1"
        serving = summary["serving"]
        assert serving["live_version"] == "1" and serving["url"].endswith("/v2/models/fraud")
        assert len(serving["predictions"]) == 5 and {p["slot"] for p in serving["predictions"]} == {"blue"}
        for stage in ("stack_up", "produce", "fraud_ingest", "fraud_features", "fraud_train"):
            assert stage in summary["stage_seconds"]

        bad = ctloop("training-set", "--pipeline", "fraud", "--start", "2026-01-02", "--end", "yesterday")
        assert bad.returncode == 2 and "--end: expected an ISO date" in bad.stderr
    finally:
        ctloop("stack", "down")
