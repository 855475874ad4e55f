"""``ctloop monitor`` on real landed data: the simulator's covariate drift (``ctloop produce --drift-kind covariate``)
through a real broker and the lander into the lake, judged against a reference snapshot of the same stream
before the drift, with a real MLflow server; then a scheduled monitor DAG run (no conf) through Airflow
(``dag.test``, the tests/dags harness) that turns the drift into a queued run of the train DAG.

The reference snapshot is the landed pre-drift transactions written in the snapshot format: their request fields
are real; the feature columns are left empty (the Spark and Feast path that fills them is tested elsewhere), so the
check judges the four request fields and says it skipped the features. For the DAG run the champion is a
registry entry whose lineage tag names that snapshot, registered without training (a stand-in: nothing here
serves predictions, so its model is never loaded; training and registering for real is test_training.py's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.lander import land
from ctloop.lake.store import open_lake
from ctloop.monitoring.quality import landed_frame
from ctloop.sim.simulator import load_simulator
from ctloop.training.training_set import write_snapshot

from benchmarks.serve_world import write_feature_rows
from tests.conftest import make_pipeline, settings_env, settings_for
from tests.dags.conftest import AIRFLOW_ENV, ROOT, airflow_db, run_dag  # noqa: F401 - airflow_db is a fixture

START = datetime(2026, 3, 1, tzinfo=UTC)
EVENTS, DRIFT_AT, DAYS = 6_000, 4_000, 2
WINDOW = timedelta(hours=4)
WITHIN_EVENTS = 700  # the first window after the drift point holds at most this many drifted events


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory, broker: str, mlflow_server: str) -> dict:
    from ctloop.sim.producer import produce

    tmp = tmp_path_factory.mktemp("monitor")
    pipelines, _ = make_pipeline(tmp, **{"simulator.params.days": DAYS, "simulator.params.start": START.isoformat(),
                                         "monitoring.drift.min_samples": 200, "monitoring.schedule": "0 */4 * * *",
                                         # its own registered model: the MLflow server is the whole session's
                                         "model.registered_name": f"ctloop-monitor-{uuid.uuid4().hex[:8]}"})
    settings = settings_for(tmp, broker, pipelines, mlflow_tracking_uri=mlflow_server)
    spec = load_spec("fraud", pipelines)
    produce(spec, settings, events=EVENTS, seed=3, drift_at=DRIFT_AT, drift_kind="covariate")
    lake = open_lake(settings)
    assert land(spec, settings, lake, "until_caught_up")["landed"] > EVENTS
    # ground truth: when the drift starts, from the same deterministic stream
    times = [m.timestamp_ms for m in load_simulator(spec, 3).messages(EVENTS, drift_at=DRIFT_AT)
             if m.stream == spec.primary]
    drift_time = datetime.fromtimestamp(times[DRIFT_AT] / 1000, UTC)
    reference_end = START + timedelta(hours=20)
    events, _ = landed_frame(spec, lake, spec.primary, START, START + timedelta(days=DAYS + 1))
    events = with_features(spec, events)
    write_feature_rows(lake, spec, events)  # as the Spark features job would lay them out, one row per event
    rows = events[events["event_timestamp"] < reference_end].copy()
    for feature in list(spec.feature_columns)[1:]:  # the reference knows only the first feature's values
        rows[feature] = np.nan
    rows[spec.labels.target] = 0
    write_snapshot(lake, spec, "predrift", rows, start=START, end=reference_end, as_of=reference_end, sources={})
    return {"spec": spec, "settings": settings, "lake": lake, "drift_time": drift_time, "times": times,
            "reference_end": reference_end}


def with_features(spec: Any, events: Any) -> Any:
    """Each event with a stand-in value for every feature (the amount times its position, so feature values follow
    the amounts and drift with them), at the event's own time, as the point-in-time join gives them."""
    events = events.assign(event_timestamp=events[spec.events[spec.primary].time_field])
    for i, feature in enumerate(spec.feature_columns, start=1):
        events[feature] = events["amount"] * i
    return events


def monitor(landed: dict, start: datetime, end: datetime) -> dict:
    out = subprocess.run([str(Path(sys.executable).parent / "ctloop"), "monitor", "--pipeline", "fraud", "--start",
                          start.isoformat(), "--end", end.isoformat(), "--reference", "predrift"],
                         env=settings_env(landed["settings"]), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_covariate_drift_is_detected_in_the_first_window_after_the_drift_point(landed: dict) -> None:
    drift_hour = landed["drift_time"].replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    first, end = (t.timestamp() * 1000 for t in (landed["drift_time"], drift_hour + WINDOW))
    after = [t for t in landed["times"] if drift_hour.timestamp() * 1000 <= t < end]
    since_drift = sum(1 for t in landed["times"] if first <= t < end)
    assert since_drift <= WITHIN_EVENTS and len(after) >= 200

    result = monitor(landed, drift_hour, drift_hour + WINDOW)
    [features] = [c for c in result["checks"] if c["name"] == "drift_features"]
    assert not features["passed"], features["detail"]
    drifted = {c["column"] for c in features["evidence"]["drifted"]}
    first = next(iter(landed["spec"].feature_columns))  # joined from the feature rows, drifting with the amounts
    assert {"amount", "channel", first} <= drifted <= {"amount", "channel", "country", "merchant_category", first}
    assert set(features["evidence"]["skipped"]) == set(landed["spec"].feature_columns) - {first}  # no reference
    assert features["evidence"]["source"] == "landed events and feature rows"
    assert result["reference"]["snapshot_id"] == "predrift" and result["reference"]["version"] is None
    [predictions] = [c for c in result["checks"] if c["name"] == "drift_predictions"]
    assert predictions["passed"] and predictions["detail"].startswith("no verdict")
    lake = landed["lake"]
    report = features["evidence"]["report"]
    assert report == result["reports"]["drift_features"] and lake.exists(report.removeprefix(lake.uri + "/"))
    assert lake.exists(result["result"].removeprefix(lake.uri + "/"))
    assert b"ctloop_drift_share" in lake.read(result["metrics"].removeprefix(lake.uri + "/"))
    assert {c["name"].split("_")[0] for c in result["checks"]} >= {"drift", "quality"}


def test_the_window_before_the_drift_passes(landed: dict) -> None:
    start = landed["reference_end"]
    assert start + WINDOW <= landed["drift_time"]
    result = monitor(landed, start, start + WINDOW)
    [features] = [c for c in result["checks"] if c["name"] == "drift_features"]
    assert features["passed"] and features["evidence"]["drifted"] == [], features["detail"]
    assert len(features["evidence"]["columns"]) == len(landed["spec"].model.request_fields) + 1


def _airflow(code: str) -> str:
    """Python run against the test Airflow's metadata DB (what the scheduler would read)."""
    out = subprocess.run([sys.executable, "-c", code], env={**AIRFLOW_ENV, "PYTHONPATH": str(ROOT / "plugins")},
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


PAUSE = """
from airflow import settings
from airflow.models.dag import DagModel
session = settings.Session()
session.query(DagModel).filter(DagModel.dag_id == "fraud_train").update({{"is_paused": {paused}}})
session.commit()
"""
QUEUED = """
from airflow import settings
from airflow.models.asset import AssetDagRunQueue, AssetModel
session = settings.Session()
rows = session.query(AssetModel.uri).join(AssetDagRunQueue, AssetDagRunQueue.asset_id == AssetModel.id)
print(sorted(uri for (uri,) in rows.filter(AssetDagRunQueue.target_dag_id == "fraud_train")))
"""


@pytest.mark.usefixtures("airflow_db")
def test_a_scheduled_monitor_run_turns_the_drift_into_a_train_run(landed: dict) -> None:
    from ctloop.registry.aliases import move_alias
    from mlflow import MlflowClient

    spec, settings = landed["spec"], landed["settings"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.create_experiment(f"monitor-{spec.registered_model}-{datetime.now(UTC):%H%M%S%f}")
    run = client.create_run(experiment, tags={"ctloop.snapshot_id": "predrift"})
    client.log_text(run.info.run_id, "stand-in", "model/README.txt")
    client.create_registered_model(spec.registered_model)
    version = client.create_model_version(spec.registered_model, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id, tags={"ctloop.snapshot_id": "predrift"})
    move_alias(settings, spec.registered_model, "champion", version.version, "stand-in champion for the test")

    # the scheduler's view: the train DAG is in the DB (dag.test writes every DAG of the folder) and unpaused
    env = settings_env(settings)
    quiet_end = landed["reference_end"] + WINDOW  # a pre-drift interval first: nothing to request
    quiet = run_dag("fraud_monitor", env, logical_date=quiet_end.isoformat())
    assert quiet["state"] == "success", quiet["log"]
    assert quiet["tasks"]["monitor"] == "success" and quiet["tasks"]["request_retrain"] == "skipped", quiet["log"]
    _airflow(PAUSE.format(paused=False))
    try:
        drift_end = landed["drift_time"].replace(minute=0, second=0, microsecond=0)
        while drift_end.hour % 4 or drift_end < landed["drift_time"] + WINDOW:
            drift_end += timedelta(hours=1)
        drifted = sum(1 for t in landed["times"]
                      if landed["drift_time"].timestamp() * 1000 <= t < drift_end.timestamp() * 1000)
        assert drifted <= 2 * WITHIN_EVENTS  # detected within 1,400 events of the drift point
        result = run_dag("fraud_monitor", env, logical_date=drift_end.isoformat())
        assert result["state"] == "success", result["log"]
        assert result["tasks"]["judge"] == result["tasks"]["monitor"] == "success"
        checks = result["xcoms"]["checks"]["return_value"]
        assert checks["interval"] == {"start": (drift_end - WINDOW).isoformat(), "end": drift_end.isoformat()}
        assert checks["reference"]["snapshot_id"] == "predrift" and checks["reference"]["version"] == version.version
        [event] = result["events"]
        assert event["uri"] == "ctloop://fraud/retrain-requests" and event["extra"]["source"] == "monitor"
        assert "drift_features: " in event["extra"]["reason"] and "amount" in event["extra"]["reason"]
        assert _airflow(QUEUED) == "['ctloop://fraud/retrain-requests']"  # a train run, queued for the scheduler
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "monitoring")]
        assert artifacts, "the drift report is logged to the champion's run"
    finally:
        _airflow(PAUSE.format(paused=True))
