"""Every DAG file imports cleanly and lightly, and every DAG follows the conventions (docs/design.md, rule 9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import AIRFLOW_ENV, ROOT

DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("tensorflow", "pyspark", "feast", "mlflow", "evidently", "great_expectations", "pandas")
EXPECTED = {"fraud_ingest", "fraud_features", "fraud_train", "fraud_monitor"}


@pytest.fixture(scope="module")
def dagbag():  # noqa: ANN201 (airflow's type)
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def test_every_dag_file_imports_without_errors(dagbag) -> None:  # noqa: ANN001
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED


def test_dag_conventions(dagbag) -> None:  # noqa: ANN001
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.doc_md.startswith("### `<pipeline>_"), dag.dag_id
        assert dag.dag_id.split("_", 1)[1] in Path(dag.fileloc).stem, "dag_id = the file's subject"
        assert "ctloop" in dag.tags and "pipeline:fraud" in dag.tags
        assert dag.catchup is False and dag.start_date.year == 2026
        assert dag.max_active_runs == 1
        assert dag.default_args["owner"] == "ml-platform" and dag.default_args["retries"] >= 1
        for task in dag.tasks:
            assert task.owner == "ml-platform" and task.retries >= 1, (dag.dag_id, task.task_id)


def test_train_dag_schedule_and_wiring(dagbag) -> None:  # noqa: ANN001
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags["fraud_train"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    uris = {asset.uri for asset in dag.timetable.asset_condition.objects}
    assert {"ctloop://fraud/features", "ctloop://fraud/retrain-requests"} <= uris
    order = ["requests", "retrain_policy", "proceed", "training_set", "training_set_ok", "quality", "quality_ok",
             "train", "evaluate", "gate_ok", "register", "registered", "deploy", "deployed"]
    for up, down in zip(order, order[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    finish = dag.get_task("retrain_finish")
    assert finish.is_teardown and "retrain_policy" in finish.upstream_task_ids
    assert dag.get_task("train").retries == 1, "training retries less than the other jobs"
    deploy = dag.get_task("deploy")
    assert deploy.command[:4] == ["deploy", "--pipeline", "fraud", "--version"] and deploy.retries == 1
    assert "deployed" in deploy.downstream_task_ids and "retrain_finish" in dag.get_task("deployed").downstream_task_ids
    features = dagbag.dags["fraud_features"].timetable.asset_condition
    assert {asset.uri for asset in features.objects} == {"ctloop://fraud/raw"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_module(path: Path) -> None:
    """In a fresh interpreter, the DAG file (ctloop, the specs, the plugins' helpers, the DAG objects) loads
    none of the heavy libraries. How long it takes is a benchmark figure (`make bench-dags`), not a test:
    a timed assertion fails on a slow or busy machine."""
    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dagfile", {str(path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
"""
    out = subprocess.run([sys.executable, "-c", script], env={**AIRFLOW_ENV, "PATH": "/usr/bin:/bin",
                                                            "PYTHONPATH": str(ROOT / "plugins")},
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
