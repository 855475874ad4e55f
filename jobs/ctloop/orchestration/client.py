"""A small client of Airflow's REST API (v2): log in, trigger a DAG run with conf, wait for it.

Stdlib only (urllib), so scripts, ``make demo`` and tests can drive the loop through real DAG runs::

    client = AirflowClient.local(settings)                   # the embedded api-server and its login
    run = client.trigger("fraud_train", {"reason": "new labels"})
    final = client.wait("fraud_train", run["dag_run_id"])  # {"state": "success", "note": "...", ...}
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ctloop.config.settings import Settings

FINISHED = {"success", "failed"}


class AirflowError(RuntimeError):
    """The API answered with an error, or a run did not finish in time."""


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self._token: str | None = None

    @classmethod
    def local(cls, settings: Settings) -> AirflowClient:
        """The embedded api-server (``ctloop stack up``) with the generated admin login."""
        from ctloop.stack.airflow import login

        user, password = login(settings)
        if password is None:
            raise AirflowError(f"no Airflow login under {settings.state_dir}/airflow: run `ctloop stack up` first")
        return cls(settings.airflow_api_url, user, password)

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (configured URL)
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code == 401 and auth and self._token is not None:
                self._token = None  # expired: log in again once
                return self._request(method, path, body, auth=auth)
            raise AirflowError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowError(f"{method} {self.base_url}{path}: {exc} (is Airflow up? `ctloop stack status`)") \
                from None
        return json.loads(text) if text else None

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (cached until the API refuses it)."""
        if self._token is None:
            answer = self._request("POST", "/auth/token", {"username": self.username, "password": self.password},
                                   auth=False)
            self._token = answer["access_token"]
        return self._token

    # -- API ----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{_q(dag_id)}")

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self._request("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, *, run_id: str | None = None,
                note: str | None = None) -> dict[str, Any]:
        """Create a manual run now (``logical_date`` null: several runs may start in the same second)."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self._request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def runs(self, dag_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        answer = self._request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns?order_by=-run_after&limit={limit}")
        return answer["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self._request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances")
        return answer["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        return self._request("GET", path + "?deserialize=true")["value"]

    def wait(self, dag_id: str, run_id: str, *, timeout_s: float = 1800, poll_s: float = 5,
             progress: bool = True) -> dict[str, Any]:
        """Wait until the run succeeds or fails; print task states as they change. Returns the run, with
        ``state``, ``note`` and ``tasks`` ({task_id: state})."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str | None] = {}
        while True:
            run = self.run(dag_id, run_id)
            tasks = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
            if progress:
                for task_id, state in tasks.items():
                    if seen.get(task_id) != state:
                        print(f"[airflow] {dag_id} {run_id}: {task_id} {state}", file=sys.stderr, flush=True)
                seen = tasks
            if run["state"] in FINISHED:
                return {**run, "tasks": tasks}
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f}s; tasks: {tasks}")
            time.sleep(poll_s)

    def trigger_and_wait(self, dag_id: str, conf: dict[str, Any] | None = None, **wait: Any) -> dict[str, Any]:
        run = self.trigger(dag_id, conf)
        return self.wait(dag_id, run["dag_run_id"], **wait)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
