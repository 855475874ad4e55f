"""Training, the evaluation gate and the registry against real MLflow servers (SQLite and Postgres backends).

Snapshots here are synthetic frames in the snapshot format (``synthetic_training_frame`` +
``write_snapshot``): the point-in-time join that builds real ones is tested in test_features_feast.py,
and training does not care where the rows came from. Small data, few epochs: behaviour, not quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ctloop.config.settings import Settings, load_settings
from ctloop.config.spec import PipelineSpec, duration_seconds, load_spec
from ctloop.lake.store import open_lake
from ctloop.sim.simulator import synthetic_training_frame
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack
from ctloop.training.training_set import write_snapshot

from tests.conftest import make_pipeline, settings_env

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 20
FAST = {"model.max_epochs": 6, "model.patience": 2, "model.hidden_units": [32, 16], "model.batch_size": 512,
        "evaluation.holdout_days": "4d", "gate.floors": {"pr_auc": 0.2, "roc_auc": 0.75}}


def _pipeline(tmp_path: Path, **overrides: Any) -> PipelineSpec:
    name = f"ctloop-test-{uuid.uuid4().hex[:8]}"
    pipelines, _ = make_pipeline(tmp_path, **{**FAST, "model.registered_name": name, **overrides})
    return load_spec("fraud", pipelines)


def _snapshot(settings: Settings, spec: PipelineSpec, snapshot_id: str, frame: Any) -> str:
    write_snapshot(open_lake(settings), spec, snapshot_id, frame, start=START, end=START + timedelta(days=DAYS),
                   as_of=START + timedelta(days=DAYS + 30), sources={})
    return snapshot_id


def _train_gate_register(spec: PipelineSpec, settings: Settings, snapshot_id: str) -> tuple[dict, dict, dict]:
    from ctloop.evaluation.evaluate import evaluate
    from ctloop.registry.register import register
    from ctloop.training.train import train

    lake = open_lake(settings)
    trained = train(spec, settings, lake, snapshot_id)
    decision = evaluate(spec, settings, lake, trained["run_id"])
    assert decision["passed"], decision["reasons"]
    return trained, decision, register(spec, settings, trained["run_id"])


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict[str, Any]:
    """A good model trained, gated, registered as challenger and promoted to champion."""
    from ctloop.registry.aliases import move_alias

    tmp = tmp_path_factory.mktemp("champion")
    spec = _pipeline(tmp)
    settings = load_settings(state_dir=tmp / "state", mlflow_tracking_uri=mlflow_server)
    frame = synthetic_training_frame(spec, 10_000, seed=7, start=START, days=DAYS)
    _snapshot(settings, spec, "good", frame)
    trained, decision, registered = _train_gate_register(spec, settings, "good")
    move_alias(settings, spec.registered_model, "champion", registered["version"], "first model: passed the floors")
    return {"spec": spec, "settings": settings, "frame": frame, "trained": trained, "decision": decision,
            "registered": registered}


def test_a_run_carries_lineage_metrics_model_and_plots(champion: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    settings, trained = champion["settings"], champion["trained"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(trained["run_id"])
    tags = run.data.tags
    assert tags["ctloop.snapshot_id"] == "good" and tags["ctloop.spec_hash"] == champion["spec"].spec_hash
    assert tags["ctloop.data_interval"] == f"{START.isoformat()}/{(START + timedelta(days=DAYS)).isoformat()}"
    for key in ("ctloop.feature_service", "ctloop.source_offsets", "ctloop.code_version", "ctloop.labels_as_of"):
        assert key in tags
    assert tags["ctloop.gate"] == "passed"
    assert run.data.params["seed"] == "42" and int(run.data.params["rows_train"]) > 0
    assert len(client.get_metric_history(run.info.run_id, "val_pr_auc")) == trained["epochs"] >= 1
    assert {"eval.candidate.pr_auc", "eval.candidate.slice.online.pr_auc", "holdout.calibration_error"} <= set(
        run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/pr_curve.png", "evaluation/calibration.png", "evaluation/confusion_matrix.png",
                         "evaluation/gate_decision.json"}
    version = client.get_model_version(champion["spec"].registered_model, champion["registered"]["version"])
    assert version.tags["ctloop.snapshot_id"] == "good" and version.tags["ctloop.infra_check"] == "passed"


def test_same_snapshot_and_seed_give_the_same_metrics(champion: dict[str, Any]) -> None:
    """Tolerance: 1e-6 absolute on every holdout metric (ops run deterministically on one device)."""
    from ctloop.training.train import train

    again = train(champion["spec"], champion["settings"], open_lake(champion["settings"]), "good")
    first = champion["trained"]
    assert again["epochs"] == first["epochs"]
    for metric, value in first["metrics"].items():
        assert again["metrics"][metric] == pytest.approx(value, abs=1e-6), metric


def test_the_registered_model_predicts_like_the_in_memory_model(champion: dict[str, Any]) -> None:
    """Registered model, loaded through pyfunc (here and in a fresh process), vs the model fitted in memory."""
    import mlflow
    from ctloop.registry.register import infra_check
    from ctloop.training.model import input_kinds, score
    from ctloop.training.train import fit, input_example
    from ctloop.training.training_set import split_by_time

    spec, settings = champion["spec"], champion["settings"]
    train_df, val_df, holdout = split_by_time(spec, champion["frame"], START + timedelta(days=DAYS))
    in_memory, _ = fit(spec, settings, train_df, val_df)  # same snapshot and seed as the registered version
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    registered = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}@challenger")
    np.testing.assert_allclose(registered.predict(holdout)["score"].to_numpy(),
                               score(in_memory, input_kinds(spec), holdout), atol=1e-6)
    fresh = infra_check(f"models:/{spec.registered_model}@challenger", settings)
    np.testing.assert_allclose(fresh["scores"], score(in_memory, input_kinds(spec), input_example(spec, holdout)),
                               atol=1e-5)


def test_the_logged_model_is_code_and_files_not_a_pickle(champion: dict[str, Any], tmp_path: Path) -> None:
    """Models from code: the model directory holds pyfunc_code.py, the .keras file and the input kinds, no pickle."""
    import mlflow
    from ctloop.training.pyfunc import MODEL_CODE
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(champion["trained"]["model_uri"], dst_path=str(tmp_path),
                                                     tracking_uri=champion["settings"].mlflow_tracking_uri))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files and not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    assert {"pyfunc_code.py", "artifacts/model.keras", "artifacts/inputs.json", "input_example.json"} <= files
    flavor = Model.load(str(local)).flavors["python_function"]
    assert Path(flavor["model_code_path"]).name == "pyfunc_code.py" and "python_model" not in flavor
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (local / "pyfunc_code.py").read_text() == MODEL_CODE.read_text()


def test_the_infra_check_refuses_a_pickled_model(mlflow_server: str) -> None:
    """A pyfunc logged as a pickled object would load and score fine; the infra check refuses it unopened."""
    import mlflow
    import pandas as pd
    from ctloop.registry.load_check import check

    class Half(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            return pd.DataFrame({"score": [0.5] * len(model_input)})

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(f"pickled-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Half(), input_example=pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="is a pickled pyfunc"):
        check(info.model_uri)


def test_a_degraded_candidate_is_refused_and_nothing_is_registered(champion: dict[str, Any]) -> None:
    """Labels shuffled before the holdout: the candidate learns noise and is scored on the real holdout."""
    from ctloop.evaluation.evaluate import evaluate
    from ctloop.registry.aliases import RegistryError, client
    from ctloop.registry.register import register
    from ctloop.training.train import train

    spec, settings = champion["spec"], champion["settings"]
    frame = champion["frame"].copy()
    holdout_start = START + timedelta(days=DAYS) - timedelta(seconds=duration_seconds(spec.evaluation.holdout_days))
    before = frame["event_timestamp"] < holdout_start
    target = spec.labels.target
    frame.loc[before, target] = np.random.default_rng(0).permutation(frame.loc[before, target].to_numpy())
    _snapshot(settings, spec, "degraded", frame)
    lake = open_lake(settings)
    candidate = train(spec, settings, lake, "degraded")
    decision = evaluate(spec, settings, lake, candidate["run_id"])
    assert not decision["passed"]
    assert decision["basis"] == "floors and comparison with the champion"
    assert any(r.startswith("improvement.pr_auc:") for r in decision["reasons"]), decision["reasons"]
    interval = decision["improvement"]["pr_auc"]  # the paired bootstrap on the same holdout rows
    assert interval["low"] <= interval["point"] <= interval["high"] < 0 and interval["samples"] > 0
    versions_before = client(settings).search_model_versions(f"name = '{spec.registered_model}'")
    with pytest.raises(RegistryError, match="the gate refused; .*improvement.pr_auc"):
        register(spec, settings, candidate["run_id"])
    assert len(client(settings).search_model_versions(f"name = '{spec.registered_model}'")) == len(versions_before)


def test_register_refuses_when_the_champion_changed_after_the_gate(champion: dict[str, Any]) -> None:
    """The fixture's run was gated when there was no champion; one was promoted since, so that decision is
    stale and registering on it would skip the comparison."""
    from ctloop.registry.aliases import RegistryError
    from ctloop.registry.register import register

    champion_version = champion["registered"]["version"]
    stale = f"compared it with no champion, but the champion is now v{champion_version}"
    with pytest.raises(RegistryError, match=stale):
        register(champion["spec"], champion["settings"], champion["trained"]["run_id"])


@pytest.mark.parametrize("damage", ["empty", "corrupt", "missing"])
def test_a_corrupt_or_empty_snapshot_is_a_clear_error_and_registers_nothing(
        tmp_path: Path, mlflow_server: str, damage: str) -> None:
    from mlflow import MlflowClient

    spec = _pipeline(tmp_path)
    settings = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server,
                             pipelines_dir=tmp_path / "pipelines", mlflow_experiment=f"damaged-{uuid.uuid4().hex}")
    frame = synthetic_training_frame(spec, 2_000, seed=1, start=START, days=DAYS)
    if damage == "empty":
        _snapshot(settings, spec, "snap", frame.iloc[:0])
    elif damage == "corrupt":
        _snapshot(settings, spec, "snap", frame)
        open_lake(settings).write("training_sets/fraud/snap/data.parquet", b"PAR1 not really parquet")
    proc = subprocess.run([sys.executable, "-m", "ctloop.cli", "train", "--pipeline", "fraud", "--dataset", "snap"],
                          capture_output=True, text=True, env=settings_env(settings), timeout=300, check=False)
    expected = {"empty": "is empty: nothing to train on", "corrupt": "is corrupt", "missing": "not found"}[damage]
    assert proc.returncode == 2 and expected in proc.stderr and "training-set snapshot 'snap'" in proc.stderr
    client = MlflowClient(mlflow_server)
    assert client.get_experiment_by_name(settings.mlflow_experiment) is None  # not even a run was started
    assert client.search_model_versions(f"name = '{spec.registered_model}'") == []


def test_quality_gate_passes_a_good_snapshot_and_names_what_fails(champion: dict[str, Any]) -> None:
    from ctloop.training.data_gate import check_snapshot

    spec, settings = champion["spec"], champion["settings"]
    lake = open_lake(settings)
    good = check_snapshot(spec, lake, "good")
    assert good["passed"] and good["failed"] == 0 and good["expectations"] > 10
    bad = champion["frame"].copy()
    bad.loc[: len(bad) // 2, "card_spend_24h"] = np.nan  # half the rows lost a feature
    bad.loc[1, spec.events[spec.primary].id_field] = bad.loc[0, spec.events[spec.primary].id_field]
    _snapshot(settings, spec, "bad-quality", bad)
    result = check_snapshot(spec, lake, "bad-quality")
    assert not result["passed"] and result["failed"] == 2
    assert any("expect_column_values_to_not_be_null(column=card_spend_24h" in r for r in result["reasons"])
    assert any("expect_column_values_to_be_unique(column=transaction_id" in r for r in result["reasons"])


@pytest.fixture
def postgres_mlflow(tmp_path: Path, postgres_database: str) -> Iterator[str]:
    """An MLflow server on a fresh database of the Postgres server at 127.0.0.1:5432."""
    settings = load_settings(state_dir=tmp_path / "pg-state", mlflow_port=free_port(),
                             mlflow_backend_store_uri=postgres_database)
    stack = Stack(settings, ["mlflow"])
    try:
        stack.up(timeout_s=180)
        yield settings.mlflow_tracking_uri
    finally:
        stack.down()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_registry_aliases_and_their_recorded_history(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """Register twice, promote twice: aliases point right, every move is recorded, last known good is known."""
    from ctloop.registry.aliases import client, history, last_known_good, move_alias

    uri = request.getfixturevalue("mlflow_server" if backend == "sqlite" else "postgres_mlflow")
    spec = _pipeline(tmp_path, **{"model.max_epochs": 2, "gate.min_improvement": {}, "gate.floors": {"pr_auc": 0.05}})
    settings = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=uri, actor="pytest")
    _snapshot(settings, spec, "first", synthetic_training_frame(spec, 6_000, seed=3, start=START, days=DAYS))
    first = _train_gate_register(spec, settings, "first")[2]
    assert first["alias"] == "challenger" and first["previous_challenger"] is None and first["champion"] is None
    move_alias(settings, spec.registered_model, "champion", first["version"], "first deploy")
    assert last_known_good(settings, spec.registered_model) is None
    _snapshot(settings, spec, "second", synthetic_training_frame(spec, 6_000, seed=4, start=START, days=DAYS))
    second = _train_gate_register(spec, settings, "second")[2]
    assert second["previous_challenger"] == first["version"] and second["champion"] == first["version"]
    move_alias(settings, spec.registered_model, "champion", second["version"], "second deploy")

    mlflow_client = client(settings)
    assert mlflow_client.get_model_version_by_alias(spec.registered_model, "champion").version == second["version"]
    assert last_known_good(settings, spec.registered_model) == first["version"]
    moves = history(settings, spec.registered_model)
    assert [(m["alias"], m["version"], m["previous_version"]) for m in moves] == [
        ("champion", second["version"], first["version"]), ("challenger", second["version"], first["version"]),
        ("champion", first["version"], ""), ("challenger", first["version"], "")]
    assert {m["actor"] for m in moves} == {"pytest"} and moves[0]["reason"] == "second deploy"
    assert all(datetime.fromisoformat(m["at"]) for m in moves)

    cli = subprocess.run([sys.executable, "-m", "ctloop.cli", "registry", "history", "--pipeline", "fraud",
                          "--alias", "champion"], capture_output=True, text=True, timeout=120, check=True,
                         env=settings_env(load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=uri,
                                                        pipelines_dir=tmp_path / "pipelines")))
    shown = json.loads(cli.stdout)
    assert shown["champion"] == second["version"] and shown["last_known_good"] == first["version"]
    assert len(shown["moves"]) == 2
