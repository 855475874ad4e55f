"""### `<pipeline>_monitor` — turn failed monitoring checks into retrain requests

Hourly. `checks` reads the monitoring result, `{"checks": [{"name", "passed", "detail"}, ...]}`;
when a check failed, `request_retrain` emits an event on `ctloop://<pipeline>/retrain-requests`
with the failures as the reason, and the retrain policy of `<pipeline>_train` decides whether it
trains. Nothing failed (or nothing checked): the run ends green with `request_retrain` skipped.

**Today** the result comes from the run's conf, so any system (or person) can report a failing
check through the REST API: trigger this DAG with `{"checks": [{"name": "drift", "passed": false,
"detail": "share of drifted features 0.4 > 0.3"}]}`. Scheduled runs carry no checks yet.
**The monitoring issue** adds the `ctloop monitor --pipeline P` job (Evidently drift, Great
Expectations quality, performance decay on delayed labels) as the `checks` task; it prints the
same JSON, so `request_retrain` and everything after it stay as they are.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task
from ctloop_airflow import dagkit

CONFIG = dagkit.settings()

for spec in dagkit.pipelines(CONFIG):
    requests_asset = dagkit.retrain_requests_asset(spec.name, CONFIG)  # the same (watched) asset as the train DAG
    with dagkit.dag(spec, "monitor", schedule="@hourly", dagrun_timeout=timedelta(hours=1), doc_md=__doc__):

        @task
        def checks(dag_run=None) -> dict:
            """The monitoring result (run conf until the monitoring job exists)."""
            return {"checks": (dag_run.conf or {}).get("checks") or []}

        @task(outlets=[requests_asset])
        def request_retrain(result: dict, dag_run=None, ti=None, outlet_events=None, asset=requests_asset) -> str:
            from airflow.sdk.exceptions import AirflowSkipException
            from ctloop.orchestration.notes import reasons_from_checks

            reasons = reasons_from_checks(result)
            if not reasons:
                raise AirflowSkipException("every check passed (or none ran): no retrain request")
            reason = "; ".join(reasons)
            outlet_events[asset].extra = {"reason": reason, "requested_by": f"monitor:{dag_run.run_id}",
                                          "source": "monitor", "requested_at": dag_run.run_after.isoformat()}
            dagkit.decision({"ti": ti}, f"retrain requested: {reason}")
            return reason

        request_retrain(checks())
