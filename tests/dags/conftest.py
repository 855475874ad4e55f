"""Airflow for the DAG tests: a private AIRFLOW_HOME and SQLite DB, the repo's dags/ and plugins/.

The environment is set when this conftest is imported, before anything imports Airflow (it reads
its configuration once). ``run_dag`` runs ``dag.test()`` in a fresh interpreter (tests/dags/run_dag.py)
so each run gets the CTLOOP_* settings of its test.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOME = Path(tempfile.mkdtemp(prefix="ctloop-airflow-tests-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "CTLOOP_PIPELINES_DIR": str(ROOT / "pipelines"),
}
os.environ.update(AIRFLOW_ENV)
sys.path.insert(0, str(ROOT / "plugins"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata DB, migrated once per session (~20 s)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env={**os.environ, **AIRFLOW_ENV}, check=True,
                   capture_output=True, timeout=300)
    return HOME


def run_dag(dag_id: str, env: dict[str, str], conf: dict[str, Any] | None = None,
            timeout: float = 900, logical_date: str | None = None) -> dict[str, Any]:
    """``dag.test()`` in a subprocess; returns its state, task states, XComs, note and asset events.

    ``logical_date`` (ISO): the run's, so its data interval is the schedule's period before it."""
    when = [logical_date] if logical_date else []
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("run_dag.py")), dag_id, json.dumps(conf or {}),
                           *when],
                          env={**AIRFLOW_ENV, **env, "PYTHONPATH": str(ROOT / "plugins")}, capture_output=True,
                          text=True, timeout=timeout, check=False)
    marker = "CTLOOP-RESULT "
    lines = [line for line in proc.stdout.splitlines() if line.startswith(marker)]
    assert proc.returncode == 0 and lines, \
        f"dag.test of {dag_id} crashed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len(marker):]) | {"log": proc.stdout[-20000:] + proc.stderr[-20000:]}
