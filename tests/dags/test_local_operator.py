"""The local runtime's job operator: the job's JSON result is the XCom; a failure names the exit code
and carries the tail of stderr; bad input (exit 2) fails without retries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.dags.conftest import ROOT


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CTLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CTLOOP_PIPELINES_DIR", str(ROOT / "pipelines"))
    return tmp_path


def _task(command: list[str]):  # noqa: ANN202
    from ctloop.config.settings import load_settings
    from ctloop_airflow.jobs import LocalJobOperator, job_task

    task = job_task("job", command, settings=load_settings(runtime="local"))
    assert isinstance(task, LocalJobOperator)
    return task


def test_result_json_is_returned_as_the_xcom(state: Path) -> None:
    requests = [{"reason": "test", "requested_at": "2026-01-05T00:00:00Z", "source": "api"}]
    result = _task(["retrain", "decide", "--pipeline", "fraud", "--run-id", "r1", "--now", "2026-01-05T00:00:00Z",
                    "--requests", json.dumps(requests)]).execute({})
    assert result["accepted"] is True and result["note"] == "retrain accepted — api: test"
    assert list((state / "state" / "lake" / "_state" / "retrain" / "fraud").glob("*-decision-*.json"))


def test_bad_input_fails_without_retry_with_the_stderr_tail(state: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as failure:
        _task(["ingest", "--pipeline", "no_such_pipeline", "--until-caught-up"]).execute({})
    message = str(failure.value)
    assert "exited with 2" in message and "no such pipeline spec" in message


def test_a_crash_fails_the_task_so_it_is_retried(state: Path) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    task = _task(["retrain", "decide", "--pipeline", "fraud", "--run-id", "r", "--now", "2026-01-01",
                  "--requests", '{"not": "a list"}'])  # an uncaught error in the job: exit 1
    with pytest.raises(AirflowException) as failure:
        task.execute({})
    assert not isinstance(failure.value, AirflowFailException)
    assert "exited with 1" in str(failure.value) and "Traceback" in str(failure.value)
    assert task.retries == 2 and os.environ["CTLOOP_STATE_DIR"].startswith(str(state))
