"""Feast on the Spark features: materialization (chunked, watermarked, idempotent) into SQLite and Redis,
online values equal the latest offline ones, point-in-time training sets, and `feast plan/apply`.

Both offline stores run for real: DuckDB (the local runtime's) and Spark (production's, here on the
session's local Spark over the file lake instead of S3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ctloop.config.settings import load_settings
from ctloop.config.spec import load_spec
from ctloop.features.clean import clean_pipeline
from ctloop.features.materialize import materialize, read_watermark
from ctloop.features.views import build_features
from ctloop.lake.hours import parse_interval
from ctloop.lake.paths import curated_prefix, features_prefix
from ctloop.lake.store import LocalLake
from ctloop.training.training_set import build_training_set

from tests.conftest import ROOT, make_pipeline
from tests.features_helpers import read_dataset, write_simulated_lake

START, END = parse_interval("2026-01-01", "2026-01-05")


@pytest.fixture(scope="module")
def lake_with_features(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("features-feast")
    # maturity 1 day over a 3-day stream, so the training set has both negatives and immature rows
    pipelines, _ = make_pipeline(tmp, **{"simulator.params.days": 3, "labels.maturity_days": 1,
                                         "features.materialize_chunk": "1d"})
    spec = load_spec("fraud", pipelines)
    lake = LocalLake(tmp / "lake")
    write_simulated_lake(lake, spec, 1500, seed=9)
    clean_pipeline(spark, spec, lake, START, END)
    build_features(spark, spec, lake, START, END)
    return {"spec": spec, "lake": lake, "tmp": tmp, "pipelines": pipelines}


def _settings(ctx: dict[str, Any], online: str, **extra: Any) -> Any:
    project = f"t{uuid.uuid4().hex[:10]}"  # also the Redis key namespace: tests never share keys
    return load_settings(state_dir=ctx["tmp"] / project, lake_uri=ctx["lake"].uri, pipelines_dir=ctx["pipelines"],
                         feast_project=project, feast_online_store=online, feast_redis="127.0.0.1:6379,db=3", **extra)


def _online(store: Any, spec: Any, key: str, values: list[str]) -> pd.DataFrame:
    other = "merchant_id" if key == "card_id" else "card_id"
    rows = [{key: v, other: "none"} for v in values]
    return pd.DataFrame(store.get_online_features(features=store.get_feature_service(spec.feature_service),
                                                  entity_rows=rows).to_dict())


@pytest.mark.parametrize(("online", "offline"), [("sqlite", "duckdb"), ("redis", "duckdb"), ("redis", "spark")])
def test_online_values_after_materialization_equal_the_latest_offline(lake_with_features: dict[str, Any],
                                                                      online: str, offline: str) -> None:
    from ctloop.features.store import open_store

    spec, lake = lake_with_features["spec"], lake_with_features["lake"]
    settings = _settings(lake_with_features, online, feast_offline_store=offline)
    store = open_store(settings, spec)
    first = materialize(spec, settings, lake, START, END, store)
    assert first["views"]["card_activity"]["chunks"] == 4  # 1-day chunks over 4 days
    assert read_watermark(lake, settings, "fraud", "card_activity") == END
    for view, key in (("card_activity", "card_id"), ("merchant_risk", "merchant_id")):
        offline = read_dataset(lake, features_prefix("fraud", view))
        latest = offline.sort_values("event_timestamp").groupby(key).tail(1).set_index(key).sort_index()
        sample = list(latest.index[:40])
        got = _online(store, spec, key, sample).set_index(key).loc[sample]
        features = list(spec.features.views[view].feature_types)
        pd.testing.assert_frame_equal(got[features].astype(float), latest.loc[sample, features].astype(float),
                                      check_names=False)
    # idempotent: the same interval again (after a re-apply, which must not reset the watermark)
    store.apply(store.list_feature_views())
    again = materialize(spec, settings, lake, START, END, store)
    assert again["views"]["card_activity"]["from"] == START and again["rows"] == first["rows"]
    assert read_watermark(lake, settings, "fraud", "card_activity") == END
    # incremental: a later interval starts from the watermark minus the overlap, not from scratch
    later = materialize(spec, settings, lake, END, END + timedelta(days=1), store)
    assert spec.features.materialize_overlap == "2d"
    assert later["views"]["card_activity"]["from"] == END - timedelta(days=2)
    assert later["views"]["card_activity"]["chunks"] == 3


@pytest.mark.parametrize("offline", ["duckdb", "spark"])
def test_training_set_is_point_in_time_correct_and_immutable(lake_with_features: dict[str, Any],
                                                             offline: str) -> None:
    from ctloop.features.store import open_store

    spec, lake = lake_with_features["spec"], lake_with_features["lake"]
    settings = _settings(lake_with_features, "sqlite", feast_offline_store=offline)
    store = open_store(settings, spec)
    as_of = START + timedelta(days=3, hours=["duckdb", "spark"].index(offline))  # one snapshot each, not reused
    snap = build_training_set(spec, settings, lake, START, START + timedelta(days=3), as_of=as_of, store=store)
    assert not snap["reused"]
    manifest = json.loads(lake.read(f"training_sets/fraud/{snap['snapshot_id']}/manifest.json"))
    assert manifest["row_count"] == snap["row_count"] > 0
    assert manifest["spec_hash"] == spec.spec_hash and manifest["feature_service"] == "fraud_model"
    assert 0 < manifest["label_rate"] < 1 and manifest["immature_left_out"] > 0
    assert manifest["sources"]["transactions"]["offsets"] and manifest["sources"]["transactions"]["partitions"]
    frame = pd.read_parquet(lake.root / f"training_sets/fraud/{snap['snapshot_id']}/data.parquet")
    labels = read_dataset(lake, curated_prefix("fraud", "chargebacks"))
    reported = labels[labels.reported_at < as_of].transaction_id
    # maturity: a negative is at least maturity_days old by as_of; every reported label is positive
    negatives = frame[frame.is_fraud == 0]
    assert (negatives.event_timestamp + timedelta(days=1) <= as_of).all()
    assert frame[frame.transaction_id.isin(reported)].is_fraud.eq(1).all()
    # leakage: every value equals a brute-force count over events strictly before the row
    txns = read_dataset(lake, curated_prefix("fraud", "transactions"))
    for row in frame.sample(200, random_state=3).itertuples():
        t = row.event_timestamp
        mine = txns[(txns.card_id == row.card_id) & (txns.event_time < t)]
        assert row.card_count_24h == (mine.event_time >= t - timedelta(hours=24)).sum()
        assert row.card_spend_7d == pytest.approx(mine[mine.event_time >= t - timedelta(days=7)].amount.sum())
    # immutable: the same inputs give the same snapshot, which is not rewritten
    again = build_training_set(spec, settings, lake, START, START + timedelta(days=3), as_of=as_of, store=store)
    assert again["reused"] and again["snapshot_id"] == snap["snapshot_id"]


def _feast(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    feast = str(Path(sys.executable).parent / "feast")
    return subprocess.run([feast, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=240)


def test_feast_plan_and_apply_from_the_repo(lake_with_features: dict[str, Any], tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    env = {**os.environ, "CTLOOP_PIPELINES_DIR": str(lake_with_features["pipelines"]),
           "CTLOOP_LAKE_URI": lake_with_features["lake"].uri}
    plan = _feast(["plan"], repo, env)
    assert plan.returncode == 0, plan.stderr
    assert "Created feature view card_activity" in plan.stdout and "Created feature service fraud_model" in plan.stdout
    applied = _feast(["apply"], repo, env)
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / ".state" / "feast" / "registry.db").is_file()
    listed = _feast(["feature-services", "list"], repo, env)
    assert "fraud_model" in listed.stdout
    # production: Redis online store, Spark offline store, everything from CTLOOP_* variables
    project = f"p{uuid.uuid4().hex[:8]}"
    prod_env = {**env, "CTLOOP_FEAST_PROJECT": project, "CTLOOP_FEAST_REDIS": "127.0.0.1:6379,db=3",
                "CTLOOP_FEAST_OFFLINE_STORE": "spark",
                "CTLOOP_FEAST_REGISTRY": str(tmp_path / "prod-registry.db")}
    prod = _feast(["-f", "production/feature_store.yaml", "apply"], repo, prod_env)
    assert prod.returncode == 0, prod.stderr
    assert (tmp_path / "prod-registry.db").is_file()


def test_feature_repo_matches_the_spec() -> None:
    """The objects feast applies are the spec's: names, entities, TTLs and dtypes."""
    from ctloop.features.store import repo_objects

    spec = load_spec("fraud", ROOT / "pipelines")
    objects = {type(o).__name__ + ":" + o.name: o for o in repo_objects(spec, load_settings())}
    for name, view in spec.features.views.items():
        fv = objects[f"FeatureView:{name}"]
        assert fv.ttl.total_seconds() == {"7d": 7 * 86400, "30d": 30 * 86400}[view.ttl]
        assert {f.name: str(f.dtype) for f in fv.schema if f.name in view.feature_types} == {
            n: {"int": "Int64", "double": "Float64"}[t] for n, t in view.feature_types.items()}
    assert {p.name for p in objects["FeatureService:fraud_model"].feature_view_projections} == set(spec.features.views)


def test_a_training_set_before_the_features_job_says_what_to_run(lake_with_features: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    """Curated events but no feature rows yet: a clear error naming the views, not the offline store's IO error."""
    lake = LocalLake(tmp_path / "lake")
    shutil.copytree(lake_with_features["lake"].root / "curated", lake.root / "curated")
    settings = _settings(lake_with_features, "sqlite")
    with pytest.raises(ValueError, match=r"no feature rows of view\(s\) card_activity, merchant_risk \(looked in .*"
                                         r"run `ctloop spark features`"):
        build_training_set(lake_with_features["spec"], settings, lake, START, START + timedelta(days=3),
                           as_of=START + timedelta(days=3))
