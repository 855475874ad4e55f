"""The monitor DAG, run by Airflow (``dag.test``), tells a webhook channel of its failed checks and puts the
checks' evidence into its retrain request; the webhook is a real local HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import make_pipeline
from tests.dags.conftest import run_dag


def test_monitor_alerts_its_channel_and_requests_a_retrain_with_evidence(
        tmp_path: Path, airflow_db: Path, webhook_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook_server
    pipelines, _ = make_pipeline(tmp_path, **{"monitoring.alerts": [
        {"kind": "webhook", "url": url, "on": ["performance"]}]})
    checks = [{"name": "performance_pos", "passed": False, "detail": "realized pr_auc 0.21 vs holdout 0.55",
               "evidence": {"decay": 0.62, "slices": [{"name": "pos", "field": "channel", "equals": "pos"}]}},
              {"name": "drift", "passed": True, "detail": "no feature drifted"}]
    result = run_dag("fraud_monitor", {"CTLOOP_PIPELINES_DIR": str(pipelines),
                                       "CTLOOP_STATE_DIR": str(tmp_path / "state")}, {"checks": checks})
    assert result["state"] == "success", result["log"]
    [event] = result["events"]
    evidence = event["extra"]["evidence"]
    assert [c["name"] for c in evidence["checks"]] == ["performance_pos"]
    assert evidence["slices"] == [{"name": "pos", "field": "channel", "equals": "pos"}]
    [alert] = received
    assert alert["event"] == "performance" and alert["evidence"]["performance_pos"]["decay"] == 0.62
    assert "performance_pos: realized pr_auc 0.21 vs holdout 0.55" in alert["text"]
