"""Concept drift caught by delayed-label performance, and only once its labels have matured.

The simulator's concept drift (``ctloop produce --drift-kind concept``: fraud moves to small domestic
card-present spend) leaves the inputs' distributions as they were, so only labels reveal it, and
they arrive up to 30 days late. Driving the model server for 36k predictions would add minutes and
nothing this test is about, so the prediction log is synthesized: a fixed scoring rule that knows the
old fraud pattern scores every simulated transaction, and its predictions, the transactions and the
chargebacks are landed in a real lake folder exactly as the lander lays them out (raw Parquet, hive
partitions by event hour). Predictions are served "in December", as ``make demo`` replays January:
maturity must follow the transactions' time, not ``served_at``. The champion and its holdout figures
live on the real MLflow server.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.events import arrow_schema
from ctloop.lake.paths import clean_marker, manifest_path, raw_prefix
from ctloop.lake.store import LocalLake
from ctloop.monitoring import performance
from ctloop.sim.simulator import FraudSimulator

from tests.conftest import make_pipeline, settings_for

START = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS, DAYS, DRIFT_DAY = 36_000, 60, 10
SERVED = datetime(2026, 12, 1, tzinfo=UTC)  # a replay: served long after the transactions happened
FRAUDY = {"electronics", "gift_cards", "jewelry", "travel", "online_services"}


def rule_score(txn: dict[str, Any]) -> float:
    """A 'model' of the old fraud pattern: risky categories, online, abroad, large amounts."""
    z = (2.0 * (txn["merchant_category"] in FRAUDY) + 1.5 * (txn["channel"] == "online")
         + 1.0 * (txn["country"] in {"US"}) + 0.8 * math.log(max(txn["amount"], 1.0) / 60.0) - 4.0)
    return 1 / (1 + math.exp(-z))


def land(lake_root: Path, spec: Any, stream: str, rows: list[dict[str, Any]]) -> None:
    event = spec.events[stream]
    table = pa.Table.from_pylist(rows, schema=arrow_schema(event))
    times = table[event.time_field].to_pylist()
    table = table.append_column("event_date", pa.array([f"{t:%Y-%m-%d}" for t in times]))
    table = table.append_column("event_hour", pa.array([f"{t:%H}" for t in times]))
    ds.write_dataset(table, str(lake_root / raw_prefix(spec.name, event.topic)), format="parquet",
                     partitioning=["event_date", "event_hour"], partitioning_flavor="hive",
                     existing_data_behavior="overwrite_or_ignore", max_partitions=4096)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("performance")
    # its own registered model: the MLflow server is the whole test session's
    pipelines, _ = make_pipeline(tmp, **{"simulator.params.days": DAYS, "monitoring.performance.min_positives": 15,
                                         "model.registered_name": f"ctloop-perf-{uuid.uuid4().hex[:8]}"})
    spec = load_spec("fraud", pipelines)
    settings = settings_for(tmp, "127.0.0.1:1", pipelines, mlflow_tracking_uri=mlflow_server)
    sim = FraudSimulator(spec, 11, start=START.isoformat(), days=DAYS, cards=3000)
    streams: dict[str, list[dict[str, Any]]] = {spec.primary: [], spec.labels.events: []}
    for msg in sim.messages(EVENTS, drift_at=EVENTS * DRIFT_DAY // DAYS, drift_kind="concept"):
        body = json.loads(msg.value)
        time_field = spec.events[msg.stream].time_field
        streams[msg.stream].append({**body, time_field: _time(body[time_field])})
    predictions = []
    for i, txn in enumerate(streams[spec.primary]):
        score = rule_score(txn)
        request = {k: txn[k] for k in spec.model.request_fields}
        predictions.append({"request_id": f"req-{i}", "transaction_id": txn["transaction_id"],
                            "card_id": txn["card_id"], "merchant_id": txn["merchant_id"],
                            "features": json.dumps(request), "model": spec.registered_model, "model_version": "1",
                            "slot": "blue", "score": score, "threshold": 0.5, "decision": int(score >= 0.5),
                            "served_at": SERVED + timedelta(seconds=i)})
    lake_root = tmp / "lake"
    for stream, rows in [*streams.items(), (spec.serving.predictions, predictions)]:
        land(lake_root, spec, stream, rows)
    lake = LocalLake(lake_root)
    # the champion's holdout: the rule on a week before the drift, as `ctloop evaluate` would log it
    rows, _ = performance.matured_predictions(spec, lake, START + timedelta(days=38), START + timedelta(days=39))
    holdout = performance.realized(spec, rows[spec.labels.target], rows["score"], rows["decision"])
    pos = rows[rows["channel"] == "pos"]
    pos_holdout = performance.realized(spec, pos[spec.labels.target], pos["score"], pos["decision"])
    register_champion(settings, spec, {"eval.candidate.pr_auc": holdout["pr_auc"],
                                       "eval.candidate.recall_at_precision": holdout["recall_at_threshold"],
                                       "eval.candidate.slice.pos.pr_auc": pos_holdout["pr_auc"]})
    return {"spec": spec, "settings": settings, "lake": lake, "holdout": holdout}


def register_champion(settings: Any, spec: Any, metrics: dict[str, float]) -> None:
    import mlflow
    from ctloop.registry.aliases import client

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"perf-{spec.registered_model}")
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
    c = client(settings)
    c.create_registered_model(spec.registered_model)
    version = c.create_model_version(spec.registered_model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    c.set_registered_model_alias(spec.registered_model, "champion", version.version)


def judged(world: dict[str, Any], day: int) -> dict[str, Any]:
    end = START + timedelta(days=day)
    found = performance.checks(world["spec"], world["settings"], world["lake"], end - timedelta(hours=1), end)
    return {c.name: c for c in found}


def test_no_verdict_before_any_label_matured(world: dict[str, Any]) -> None:
    checks = judged(world, 25)  # 25 days in: no transaction is 30 days old yet
    assert checks["performance"].passed
    assert checks["performance"].detail.startswith("no verdict: 0 matured positives")
    assert checks["performance"].evidence["immature_left_out"] > 0


def test_drift_not_judged_while_its_labels_are_immature(world: dict[str, Any]) -> None:
    checks = judged(world, DRIFT_DAY + 28)  # the drift is 28 days old: its predictions are still immature
    verdict = checks["performance"]
    assert verdict.passed, verdict.detail
    assert "no verdict" not in verdict.detail
    assert verdict.evidence["cohort"][1] <= (START + timedelta(days=DRIFT_DAY)).isoformat()
    assert verdict.evidence["champion_version"] == "1"
    assert verdict.evidence["holdout"]["pr_auc"] == pytest.approx(world["holdout"]["pr_auc"])


def test_concept_drift_caught_once_labels_mature(world: dict[str, Any]) -> None:
    checks = judged(world, DRIFT_DAY + 37)  # the cohort is the week after the drift, matured
    verdict = checks["performance"]
    assert not verdict.passed, verdict.detail
    perf = world["spec"].monitoring.performance
    # failed on the bootstrap bound, at the confidence left to each of the four checks (Bonferroni)
    assert verdict.evidence["realized_upper"] < world["holdout"]["pr_auc"] * (1 - perf.max_decay)
    assert verdict.evidence["confidence"] == pytest.approx(1 - (1 - world["spec"].gate.confidence) / 4)
    assert verdict.evidence["resamples"] == performance.RESAMPLES
    assert verdict.evidence["realized"]["positives"] >= 15
    assert set(checks) == {"performance", "performance_online", "performance_pos", "performance_high_value"}
    pos = checks["performance_pos"]  # the drifted fraud is card-present: the pos slice decays too
    assert not pos.passed, pos.detail
    assert pos.evidence["slices"] == [{"name": "pos", "field": "channel", "equals": "pos"}]
    assert checks["performance_online"].passed, "no holdout figure for the slice, or too few positives: no verdict"


def test_join_rules_on_a_small_log(tmp_path: Path) -> None:
    """Which predictions count: first served per transaction, the champion's only, matured only, labels known
    by "now" only; a prediction whose transaction has not landed falls back to its served time."""
    pipelines, _ = make_pipeline(tmp_path, **{"monitoring.performance.min_positives": 5})
    spec = load_spec("fraud", pipelines)
    day = datetime(2026, 1, 10, 12, tzinfo=UTC)  # in the cohort judged at "now": [Jan 9, Jan 16)
    now = datetime(2026, 2, 15, tzinfo=UTC)
    base = {"card_id": "c", "merchant_id": "m", "amount": 10.0, "currency": "EUR", "merchant_category": "grocery",
            "country": "DE", "channel": "pos"}
    txns = [{**base, "transaction_id": f"t{i}", "event_time": day} for i in range(40)]
    txns.append({**base, "transaction_id": "late", "event_time": datetime(2026, 1, 20, tzinfo=UTC)})  # immature
    labels = [{"chargeback_id": f"cb{i}", "transaction_id": f"t{i}", "card_id": "c", "reason": "fraud",
               "reported_at": day + timedelta(days=8 if i < 19 else 49)} for i in range(20)]  # t19: after "now"
    # the label stream has landed until Feb 14 (a chargeback of a transaction no prediction judged)
    labels.append({"chargeback_id": "cbx", "transaction_id": "other", "card_id": "c", "reason": "other",
                   "reported_at": datetime(2026, 2, 14, tzinfo=UTC)})

    def prediction(tid: str, version: str, served: datetime, score: float) -> dict[str, Any]:
        return {"request_id": f"{tid}-{version}", "transaction_id": tid, "card_id": "c", "merchant_id": "m",
                "features": json.dumps({"amount": 10.0, "channel": "pos"}), "model": "m", "model_version": version,
                "slot": "blue", "score": score, "threshold": 0.5, "decision": int(score >= 0.5), "served_at": served}

    preds = [prediction(f"t{i}", "1", day, 0.9 if i < 20 else 0.1) for i in range(10)]  # scored first by v1
    served = datetime(2026, 12, 1, tzinfo=UTC)  # replayed much later
    preds += [prediction(f"t{i}", "2", served, 0.9 if i < 20 else 0.1) for i in range(40)]
    preds += [preds[-1], prediction("late", "2", served, 0.2), prediction("unlanded", "2", day, 0.3)]
    for stream, rows in [(spec.primary, txns), (spec.labels.events, labels), (spec.serving.predictions, preds)]:
        land(tmp_path / "lake", spec, stream, rows)

    checks = performance.checks(spec, None, LocalLake(tmp_path / "lake"), now - timedelta(hours=1), now,
                                champion=("2", {"pr_auc": 0.9}))
    verdict = checks[0]
    assert verdict.evidence["predictions_by_version"] == {"1": 10, "2": 31}  # t0..t9 kept as v1 first served them
    assert verdict.evidence["immature_left_out"] == 1
    # v2's 30 transactions and the unlanded one (by its served time); t10..t18 positive, t19 reported too late
    assert verdict.evidence["realized"]["rows"] == 31 and verdict.evidence["realized"]["positives"] == 9
    assert verdict.evidence["realized"]["recall_at_threshold"] == 1.0
    assert verdict.evidence["realized"]["precision_at_threshold"] == 0.9
    assert verdict.passed and verdict.evidence["decay"] < 0.2


def test_labels_count_only_up_to_the_watermark(tmp_path: Path) -> None:
    """A chargeback landed after the label stream's watermark (landed, not yet cleaned), though before "now",
    does not make a prediction positive: maturity and labels are measured against the same horizon. The
    lander's manifest and the cleaner's marker are written as they lay them out (no lander runs here)."""
    pipelines, _ = make_pipeline(tmp_path, **{"monitoring.performance.min_positives": 5})
    spec = load_spec("fraud", pipelines)
    day = datetime(2026, 1, 10, 12, tzinfo=UTC)  # matured by Feb 9 12:00, in the cohort judged at "now"
    now, watermark, late = (datetime(2026, 2, 15, tzinfo=UTC), datetime(2026, 2, 14, tzinfo=UTC),
                            datetime(2026, 2, 14, 6, tzinfo=UTC))
    base = {"card_id": "c", "merchant_id": "m", "amount": 10.0, "currency": "EUR", "merchant_category": "grocery",
            "country": "DE", "channel": "pos"}
    txns = [{**base, "transaction_id": f"t{i}", "event_time": day} for i in range(40)]
    labels = [{"chargeback_id": f"cb{i}", "transaction_id": f"t{i}", "card_id": "c", "reason": "fraud",
               "reported_at": day + timedelta(days=8) if i < 10 else late} for i in range(20)]
    preds = [{"request_id": f"r{i}", "transaction_id": f"t{i}", "card_id": "c", "merchant_id": "m",
              "features": json.dumps({"amount": 10.0, "channel": "pos"}), "model": "m", "model_version": "1",
              "slot": "blue", "score": 0.9 if i < 20 else 0.1, "threshold": 0.5, "decision": int(i < 20),
              "served_at": day} for i in range(40)]
    for stream, rows in [(spec.primary, txns), (spec.labels.events, labels), (spec.serving.predictions, preds)]:
        land(tmp_path / "lake", spec, stream, rows)
    lake = LocalLake(tmp_path / "lake")
    topic = spec.events[spec.labels.events].topic
    lake.write(manifest_path(spec.name, topic, 0, 0), json.dumps({"partition": 0, "files": [
        {"kind": "raw", "lake_partition": f"event_date={late:%Y-%m-%d}/event_hour={late:%H}", "first_offset": 0,
         "last_offset": 19, "min_event_time": (day + timedelta(days=8)).isoformat(),
         "max_event_time": late.isoformat()}]}).encode())  # landed until Feb 14 07:00
    lake.write(clean_marker(spec.name, spec.labels.events, f"event_date={watermark - timedelta(days=1):%Y-%m-%d}"),
               json.dumps({"until": watermark.isoformat()}).encode())  # cleaned until Feb 14 00:00: the watermark

    verdict = performance.checks(spec, None, lake, now - timedelta(hours=1), now, champion=("1", {"pr_auc": 0.9}))[0]
    assert verdict.evidence["labels_known_until"] == watermark.isoformat()
    assert verdict.evidence["realized"]["rows"] == 40
    assert verdict.evidence["realized"]["positives"] == 10  # t10..t19 were reported after the watermark
    assert verdict.evidence["realized"]["precision_at_threshold"] == 0.5

