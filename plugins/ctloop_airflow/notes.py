"""Listener that writes each ctloop DAG run's decisions into the run's note (the UI shows it).

Airflow 3 gives tasks no way to set their run's note: the Task SDK reads ``dag_run.note`` but its
execution API cannot write it, and the public REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}``)
would need credentials inside every task. The scheduler, though, calls dag-run listeners with the
run attached to its own DB session. So tasks record each decision as an XCom under
``ctloop_decision`` (``dagkit.decision``) and, when the run finishes, this listener joins them into
the note, in the order they were made, and names the tasks that failed. A note a person typed is
kept below ours.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.listeners import hookimpl
from ctloop.orchestration.notes import DECISION_KEY

MARK = "ctloop:"  # first line of notes this listener wrote


def compose(decisions: list[str], failed: list[str], previous: str | None) -> str | None:
    """The run's note (pure: tested without a scheduler)."""
    lines = list(decisions) + ([f"failed: {', '.join(sorted(failed))}"] if failed else [])
    if not lines:
        return None
    mine = "\n".join([MARK, *(f"- {line}" for line in lines)])
    if previous and not previous.startswith(MARK):
        return f"{mine}\n\n{previous}"
    return mine


def _value(raw: Any) -> str:
    from airflow.models.xcom import XComModel

    value = XComModel.deserialize_value(type("Row", (), {"value": raw})())
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
            return decoded if isinstance(decoded, str) else value
        except ValueError:
            return value
    return str(value)


def write_note(dag_run: Any) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:  # dag.test() hands over a detached run: write through a session of our own
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as own:
            attached = own.get(DagRun, dag_run.id)
            if attached is not None:
                _write(own, attached)
                dag_run.__dict__.pop("dag_run_note", None)
        return
    _write(session, dag_run)


def _write(session: Any, dag_run: Any) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    rows = session.execute(
        select(XComModel.value).where(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
                                      XComModel.key == DECISION_KEY).order_by(XComModel.timestamp)
    ).all()
    failed = [ti.task_id for ti in dag_run.get_task_instances(session=session)
              if ti.state == TaskInstanceState.FAILED]
    note = compose([_value(r.value) for r in rows], failed if rows else [], dag_run.note)
    if note is not None and note != dag_run.note:
        dag_run.note = note


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    write_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    write_note(dag_run)
