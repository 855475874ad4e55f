"""Answer a Human-in-the-loop task the way the Airflow UI's Required Actions do (used by tests/dags).

Waits until the task is parked awaiting input, then sends the answer through Airflow's own REST API
handler (``PATCH …/taskInstances/{task}/-1/hitlDetails``, the core API app in process, every user an
admin) on the same metadata DB ``dag.test()`` is running on. Prints the reply as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time


def main(dag_id: str, task_id: str, answer: dict, timeout: float) -> None:
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    while True:
        with settings.Session() as session:
            waiting = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT)).first()
            run_id = waiting.run_id if waiting else None
        if run_id or time.monotonic() > deadline:
            break
        time.sleep(1)
    if run_id is None:
        print("CTLOOP-RESULT " + json.dumps({"status": None, "body": f"{task_id} never waited for input"}))
        return
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app("core"))
    reply = client.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
                         json=answer)
    print("CTLOOP-RESULT " + json.dumps({"status": reply.status_code, "body": reply.json()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4]))
