"""Airflow's metadata DB on Postgres (`CTLOOP_AIRFLOW_DB_URI`), as production runs it, and retrain
requests from the monitor DAG and from Kafka going through the real scheduler and triggerer.

The SQLite default is what `make demo` and the demo test in test_features_cli.py run; this test
starts the same four services on a fresh database of the Postgres server at 127.0.0.1. A failing
check in `fraud_monitor` and a message on the retrain topic (sent while `fraud_train` is still
paused: Airflow runs an asset's watchers only while a DAG scheduled on it is unpaused) become asset
events, then `fraud_train` runs. The ledger holds an accepted run two hours old, so the policy
refuses both requests by the cooldown: the runs stay green, say why in their notes, and train nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
from ctloop.lake.store import open_lake
from ctloop.orchestration.client import AirflowClient
from ctloop.retrain.ledger import Ledger
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack
from sqlalchemy.engine import make_url

from tests.conftest import make_pipeline, seed_recent_accepted_run, settings_env, settings_for

CTLOOP = Path(sys.executable).parent / "ctloop"
DRIFT = "drift: share of drifted features 0.4 > 0.3"


def _query(uri: str, sql: str) -> list[tuple[Any, ...]]:
    url = make_url(uri)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def test_airflow_on_postgres_turns_monitor_and_kafka_requests_into_train_runs_the_policy_decides(
        tmp_path: Path, broker: str, postgres_database: str, mlflow_server: str) -> None:
    pipelines, suffix = make_pipeline(tmp_path, **{"retrain.schedule": None})  # events only: no scheduled run
    # MLflow: the monitor DAG's own hourly run judges the last hour meanwhile (no champion: no verdict)
    settings = settings_for(tmp_path, broker, pipelines, airflow_port=free_port(), airflow_db_uri=postgres_database,
                            retrain_topic=f"ctloop.retrain.{suffix}", mlflow_tracking_uri=mlflow_server)
    ledger = Ledger(open_lake(settings), "fraud")
    seed_recent_accepted_run(ledger)
    stack = Stack(settings, ["airflow"])
    try:
        rows = stack.up(timeout_s=300)
        assert {r["service"] for r in rows} == {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                                                "airflow-triggerer"}
        client = AirflowClient.local(settings)
        assert client.health()["metadatabase"]["status"] == "healthy"
        assert client.dag("fraud_train")["is_paused"], "the train DAG must start paused"

        monitor = client.trigger_and_wait("fraud_monitor", {"checks": [
            {"name": "drift", "passed": False, "detail": "share of drifted features 0.4 > 0.3"}]},
            timeout_s=300, progress=False)
        assert monitor["state"] == "success", monitor
        # a reported check: no monitoring job, and no quality block to acknowledge
        assert monitor["tasks"] == {"judge": "success", "monitor": "skipped", "checks": "success",
                                    "request_retrain": "success", "quality_blocked": "success",
                                    "acknowledge": "skipped", "record_acknowledgement": "skipped",
                                    "acknowledged": "skipped"}
        assert f"retrain requested: {DRIFT}" in (monitor["note"] or "")

        sent = subprocess.run([str(CTLOOP), "retrain", "request", "--pipeline", "fraud", "--reason",
                               "labels for January arrived", "--requested-by", "pytest"],
                              env=settings_env(settings), capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stderr[-2000:]
        client.set_paused("fraud_train", False)

        deadline = time.monotonic() + 300
        while True:
            runs = client.runs("fraud_train")
            notes = "\n".join(r.get("note") or "" for r in runs if r["state"] == "success")
            if "monitor: cooldown" in notes and "kafka: cooldown" in notes:
                break
            assert time.monotonic() < deadline, f"train runs so far: {runs}"
            time.sleep(5)
        client.set_paused("fraud_train", True)
        assert {r["state"] for r in runs} == {"success"}
        for run in runs:
            tasks = {t["task_id"]: t["state"] for t in client.task_instances("fraud_train", run["dag_run_id"])}
            assert tasks["retrain_policy"] == "success" and tasks["training_set"] == "skipped", tasks
    finally:
        stack.down()

    refused = {r["request"]["source"]: r for r in ledger.records() if r.get("outcome") == "refused"}
    assert refused["monitor"]["request"]["reason"] == DRIFT
    assert refused["kafka"]["request"]["reason"] == "labels for January arrived"
    assert refused["kafka"]["request"]["requested_by"] == "pytest"
    assert refused["kafka"]["why"].startswith("cooldown")
    # the runs, their notes and the asset events are rows of the Postgres database, not of a SQLite file
    states = _query(postgres_database, "SELECT dag_id, state FROM dag_run ORDER BY id")
    assert ("fraud_monitor", "success") in states and ("fraud_train", "success") in states
    events = [json.loads(e) if isinstance(e, str) else e for (e,) in _query(
        postgres_database, "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.uri = 'ctloop://fraud/retrain-requests' ORDER BY e.id")]
    assert [e.get("source") or e["payload"]["source"] for e in events] == ["monitor", "kafka"]
    assert not (settings.state_dir / "airflow" / "airflow.db").exists()
