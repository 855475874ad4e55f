"""The DAGs end to end in the local runtime with ``dag.test()``: a real broker (the session's Tansu),
real jobs as subprocesses, a private Airflow DB. Small data: 3 simulated days, 2,000 transactions.

ingest → (raw asset event with the interval) → features → (features asset event); in `service`
landing mode the ingest DAG only announces what a lander outside it landed; a failing
monitoring check → a retrain request event; a train run inside the cooldown is refused, stays
green and says why in its note. The accepted path (training set, quality, train, evaluate, register)
runs under a real scheduler in the demo test, tests/integration/test_features_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.announce import announce
from ctloop.ingest.lander import land
from ctloop.lake.store import open_lake
from ctloop.retrain.ledger import Ledger
from ctloop.sim.producer import produce

from tests.conftest import make_pipeline, seed_recent_accepted_run, settings_env, settings_for
from tests.dags.conftest import run_dag


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, broker: str, airflow_db: Path, mlflow_server: str) -> dict:
    tmp = tmp_path_factory.mktemp("dags-e2e")
    pipelines, _ = make_pipeline(tmp, **{"simulator.params.days": 3, "labels.maturity_days": 1})
    # MLflow: a monitor run without conf checks runs `ctloop monitor`, which asks the registry for the champion
    settings = settings_for(tmp, broker, pipelines, spark_master="local[2]", spark_shuffle_partitions=4,
                            mlflow_tracking_uri=mlflow_server)
    produced = produce(load_spec("fraud", pipelines), settings, events=2000, seed=11, bad_fraction=0.01)
    return {"settings": settings, "env": settings_env(settings), "messages": produced["messages"]}


def test_ingest_lands_and_announces_the_interval_then_idles(loop: dict) -> None:
    first = run_dag("fraud_ingest", loop["env"])
    assert first["state"] == "success", first["log"]
    assert first["tasks"] == {"land": "success", "announce": "success", "publish_raw": "success",
                              "announced": "success"}
    landed = first["xcoms"]["land"]["return_value"]  # the job's JSON, through the result file
    assert landed["landed"] + landed["dead_letters"] == loop["messages"] and landed["dead_letters"] > 0
    told = first["xcoms"]["announce"]["return_value"]
    assert [told[k] for k in ("landed", "dead_letters", "files", "interval")] == \
        [landed[k] for k in ("landed", "dead_letters", "files", "interval")]
    assert first["xcoms"]["announced"]["return_value"]["cursor"] == told["cursor"]
    [event] = first["events"]
    assert event["uri"] == "ctloop://fraud/raw" and event["extra"]["interval"] == landed["interval"]
    assert event["extra"]["landed"] == landed["landed"]
    assert first["note"].startswith(f"ctloop:\n- landed {landed['landed']:,} events")
    loop["interval"] = landed["interval"]

    again = run_dag("fraud_ingest", loop["env"])
    assert again["state"] == "success" and again["tasks"]["publish_raw"] == "skipped" and again["events"] == []
    assert again["tasks"]["announced"] == "skipped"
    assert again["note"] == "ctloop:\n- nothing new landed (0 to the dead-letter topic): no raw asset event"


def test_features_for_the_landed_interval(loop: dict) -> None:
    assert loop.get("interval"), "the ingest test (run first, in this module) landed no interval"
    start, end = loop["interval"]
    result = run_dag("fraud_features", loop["env"], {"start": start, "end": end})
    assert result["state"] == "success", result["log"]
    assert set(result["tasks"].values()) == {"success"}
    assert result["xcoms"]["interval"]["return_value"] == [start, end]
    assert result["xcoms"]["materialize"]["return_value"]["rows"] > 0
    assert result["events"] == [{"uri": "ctloop://fraud/features", "extra": {"interval": [start, end]}}]
    rows = result["xcoms"]["materialize"]["return_value"]["rows"]
    assert f"{rows:,} rows materialized to the online store" in result["note"]


def test_failed_check_becomes_a_retrain_request(loop: dict) -> None:
    checks = [{"name": "drift", "passed": False, "detail": "share of drifted features 0.4 > 0.3"},
              {"name": "quality", "passed": True}]
    result = run_dag("fraud_monitor", loop["env"], {"checks": checks})
    assert result["state"] == "success" and result["tasks"]["request_retrain"] == "success"
    assert result["tasks"]["monitor"] == "skipped"  # the conf's checks are the result: no monitoring job
    [event] = result["events"]
    assert event["uri"] == "ctloop://fraud/retrain-requests"
    assert event["extra"]["reason"] == "drift: share of drifted features 0.4 > 0.3"
    assert event["extra"]["source"] == "monitor"
    assert result["note"] == "ctloop:\n- retrain requested: drift: share of drifted features 0.4 > 0.3"

    quiet = run_dag("fraud_monitor", loop["env"])  # no conf: `ctloop monitor` judges the last hour (nothing landed)
    assert quiet["state"] == "success" and quiet["tasks"]["request_retrain"] == "skipped" and quiet["events"] == []
    assert quiet["tasks"]["monitor"] == "success"


def test_train_request_inside_the_cooldown_is_refused_green_with_a_note(loop: dict) -> None:
    settings = loop["settings"]
    ledger = Ledger(open_lake(settings), "fraud")
    seed_recent_accepted_run(ledger)  # dag.test runs "now"

    result = run_dag("fraud_train", loop["env"], {"reason": "labels arrived"})
    assert result["state"] == "success", result["log"]
    tasks = result["tasks"]
    assert tasks["requests"] == tasks["retrain_policy"] == tasks["proceed"] == "success"
    for skipped in ("training_set", "quality", "train", "evaluate", "register", "registered", "deploy", "deployed"):
        assert tasks[skipped] == "skipped", (skipped, tasks)
    assert tasks["retrain_finish"] == "success"  # the teardown runs; for a refused run it records nothing
    assert result["xcoms"]["retrain_finish"]["return_value"]["recorded"] is False
    assert result["note"].startswith("ctloop:\n- retrain not started — api: cooldown: last accepted run earlier")
    refused = [r for r in ledger.records() if r.get("outcome") == "refused"]
    assert [r["request"]["reason"] for r in refused] == ["labels arrived"]
    assert json.loads(json.dumps(refused[0]))["run_id"] == result["run_id"]


def test_service_landing_the_dag_only_announces(loop: dict) -> None:
    """CTLOOP_LANDING=service: a lander outside the DAG lands (here one `ctloop ingest` by hand, standing in
    for the Deployment); the run joins no consumer group, announces what it landed, then moves the cursor."""
    settings = loop["settings"]
    spec = load_spec("fraud", settings.pipelines_dir)
    produce(spec, settings, events=300, seed=12)
    landed = land(spec, settings, open_lake(settings), "until_caught_up")
    assert landed["landed"] > 0
    result = run_dag("fraud_ingest", {**loop["env"], "CTLOOP_LANDING": "service"})
    assert result["state"] == "success", result["log"]
    assert result["tasks"] == {"announce": "success", "publish_raw": "success", "announced": "success"}
    told = result["xcoms"]["announce"]["return_value"]
    assert (told["landed"], told["interval"]) == (landed["landed"], landed["interval"])
    [event] = result["events"]
    assert event["uri"] == "ctloop://fraud/raw" and event["extra"]["interval"] == landed["interval"]
    assert announce(open_lake(settings), spec)["manifests"] == 0  # the cursor moved past it
