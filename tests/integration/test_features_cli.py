"""The feature commands as a user runs them: `ctloop demo` from landing to a materialized store and a
training-set snapshot, then the individual jobs by hand (idempotent) and their input errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ctloop.stack import free_port

from tests.conftest import make_pipeline, settings_env, settings_for

CTLOOP = Path(sys.executable).parent / "ctloop"


def test_demo_goes_from_landing_to_a_training_set(tmp_path: Path) -> None:
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 3, "labels.maturity_days": 1})
    port = free_port()
    settings = settings_for(tmp_path, f"127.0.0.1:{port}", pipelines, broker_port=port,
                            spark_master="local[2]", spark_shuffle_partitions=4)
    env = settings_env(settings)

    def ctloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CTLOOP), *args], env=env, capture_output=True, text=True, timeout=600, check=False)

    try:
        demo = ctloop("demo", "--pipeline", "fraud", "--events", "1500", "--bad-fraction", "0.01")
        assert demo.returncode == 0, demo.stderr[-3000:]
        summary = json.loads(demo.stdout)
        feats = summary["features"]
        curated = feats["curated"]
        assert curated["transactions"]["rows"] + curated["chargebacks"]["rows"] == summary["landed"]["landed"]
        assert feats["features"]["card_activity"]["rows"] > 0
        assert feats["materialized"]["rows"] > 0 and feats["materialized"]["online_store"] == "sqlite"
        snap = feats["training_set"]
        assert snap["row_count"] > 0 and snap["snapshot_id"]
        for stage in ("spark_clean", "spark_features", "materialize", "training_set"):
            assert stage in summary["stage_seconds"]

        start, end = feats["interval"]
        again = ctloop("spark", "clean", "--pipeline", "fraud", "--start", start, "--end", end)
        assert again.returncode == 0, again.stderr[-2000:]
        streams = json.loads(again.stdout)["streams"]
        assert streams["transactions"]["rows"] == feats["curated"]["transactions"]["rows"]
        mat = ctloop("materialize", "--pipeline", "fraud", "--start", start, "--end", end)
        assert mat.returncode == 0, mat.stderr[-2000:]
        assert json.loads(mat.stdout)["rows"] == feats["materialized"]["rows"]  # stdout is the JSON summary only

        bad = ctloop("training-set", "--pipeline", "fraud", "--start", "2026-01-02", "--end", "yesterday")
        assert bad.returncode == 2 and "--end: expected an ISO date" in bad.stderr
    finally:
        ctloop("stack", "down")
