"""Airflow's metadata DB on Postgres (`CTLOOP_AIRFLOW_DB_URI`), as production runs it.

The SQLite default is what `make demo` and the demo test in test_features_cli.py run; this test
starts the same four services on a fresh database of the Postgres server at 127.0.0.1 and drives
one DAG run through the scheduler, the LocalExecutor and the execution API.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
from ctloop.airflow_client import AirflowClient
from ctloop.stack import Stack, free_port
from sqlalchemy.engine import make_url

from tests.conftest import make_pipeline, settings_for


def test_airflow_runs_on_postgres_and_a_monitor_failure_requests_retraining(
        tmp_path: Path, broker: str, postgres_database: str) -> None:
    pipelines, _ = make_pipeline(tmp_path)
    settings = settings_for(tmp_path, broker, pipelines, airflow_port=free_port(), airflow_db_uri=postgres_database)
    stack = Stack(settings, ["airflow"])
    try:
        rows = stack.up(timeout_s=300)
        assert {r["service"] for r in rows} == {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                                                "airflow-triggerer"}
        client = AirflowClient.local(settings)
        assert client.health()["metadatabase"]["status"] == "healthy"
        assert client.dag("fraud_train")["is_paused"], "the train DAG must start paused"

        run = client.trigger_and_wait("fraud_monitor", {"checks": [
            {"name": "drift", "passed": False, "detail": "share of drifted features 0.4 > 0.3"}]},
            timeout_s=300, progress=False)
        assert run["state"] == "success", run
        assert run["tasks"] == {"checks": "success", "request_retrain": "success"}
        assert "retrain requested: drift: share of drifted features 0.4 > 0.3" in (run["note"] or "")
    finally:
        stack.down()

    # the run and its note are rows of the Postgres database, not of a SQLite file beside it
    url = make_url(postgres_database)
    with psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as conn:
        cur = conn.cursor()
        cur.execute("SELECT state FROM dag_run WHERE dag_id = 'fraud_monitor' AND run_id = %s", (run["dag_run_id"],))
        assert cur.fetchall() == [("success",)]
        cur.execute("SELECT count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE %s",
                    ("%fraud/retrain-requests%",))
        assert cur.fetchone()[0] == 1
    conn.close()
    assert not (settings.state_dir / "airflow" / "airflow.db").exists()
