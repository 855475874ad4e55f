"""Blocked landed data through Airflow: the train DAG refuses a window holding an interval that broke its
suite, and its note says why; in the monitor DAG the note says why too, a person approves in Required
Actions, and the acknowledgement is recorded.

``dag.test()`` (tests/dags/run_dag.py) parks the ``acknowledge`` task awaiting input, as the scheduler
would; the answer goes in through Airflow's own REST handler, as the UI sends it (tests/dags/respond_hitl.py).
The run's checks come from its conf, computed by the real quality checks on a real lake: the checks task
is the conf reader until ``ctloop monitor`` replaces it, and either way prints the same JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ctloop.monitoring.blocks import blocks
from ctloop.monitoring.quality import checks

from tests.conftest import settings_env
from tests.dags.conftest import AIRFLOW_ENV, ROOT, run_dag
from tests.quality_helpers import BAD_HOUR, H, landed_lake, write_bad_events


def _answer(env: dict[str, str], answer: dict[str, Any], out: list[dict[str, Any]]) -> None:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("respond_hitl.py")), "fraud_monitor",
                           "acknowledge", json.dumps(answer), "600"], capture_output=True, text=True, timeout=900,
                          env={**env, **AIRFLOW_ENV, "PYTHONPATH": str(ROOT / "plugins"),
                               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CTLOOP-RESULT ")]
    out.append(json.loads(lines[-1].removeprefix("CTLOOP-RESULT ")) if lines else {"error": proc.stderr[-3000:]})


def test_blocked_interval_is_acknowledged_through_required_actions(airflow_db: Path, tmp_path: Path) -> None:
    spec, lake, settings = landed_lake(tmp_path)
    write_bad_events(spec, lake)
    found = checks(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)
    conf = {"checks": [json.loads(json.dumps(c.to_json(), default=str)) for c in found]}
    env = settings_env(settings)
    answers: list[dict[str, Any]] = []
    responder = threading.Thread(target=_answer, args=(env, {"chosen_options": ["Approve"], "params_input": {
        "comment": "load-test events, safe to train around"}}, answers))
    responder.start()
    result = run_dag("fraud_monitor", env, conf)
    responder.join(60)

    assert answers and answers[0].get("status") == 200, answers
    tasks = result["tasks"]
    assert tasks["quality_blocked"] == tasks["acknowledge"] == tasks["record_acknowledgement"] == "success", tasks
    assert tasks["request_retrain"] == "skipped", "a block requests no retrain"
    note = result["note"]
    assert f"training blocked on {BAD_HOUR.isoformat()}" in note and "quality_transactions" in note, note
    assert "acknowledged by" in note and "load-test events, safe to train around" in note, note
    [released] = blocks(lake, "fraud")
    ack = released["acknowledged"]
    assert ack is not None and ack["comment"] == "load-test events, safe to train around"
    assert ack["by"] == answers[0]["body"]["responded_by"]["name"]


def test_train_run_refuses_a_blocked_window_and_its_note_says_why(airflow_db: Path, tmp_path: Path) -> None:
    """45 simulated days, so `training-set --latest` has a window with mature labels; its first day breaks."""
    spec, lake, settings = landed_lake(tmp_path, 20_000, **{"simulator.params.days": 45})
    write_bad_events(spec, lake, 20_000)
    assert not checks(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)[0].passed
    result = run_dag("fraud_train", settings_env(settings), {"reason": "labels arrived"})

    tasks = result["tasks"]
    assert tasks["training_set"] == tasks["training_set_ok"] == "success", tasks
    assert tasks["quality"] == tasks["train"] == "skipped" and tasks["retrain_finish"] == "success", tasks
    assert result["xcoms"]["training_set"]["return_value"]["refused"] is True
    note = result["note"]
    for words in (f"interval {BAD_HOUR.isoformat()}", "refused", "expect_column_values_to_be_in_set(column=currency",
                  "Required Actions of the fraud_monitor run", "ctloop quality ack"):
        assert words in note, (words, note)
