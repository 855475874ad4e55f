"""### `<pipeline>_monitor` — turn failed monitoring checks into retrain requests

On `monitoring.schedule` (default hourly), over contiguous data intervals. `monitor` runs `ctloop monitor`
for the run's data interval: drift against the champion's training snapshot (Evidently reports),
Great Expectations suites of the landed streams, delayed-label performance (docs/monitoring.md).
`checks` hands its result, `{"checks": [{"name", "passed", "detail", "evidence"}, ...]}`, on; when a
check failed, `request_retrain` emits an event on `ctloop://<pipeline>/retrain-requests` with the
failures as the reason, and the retrain policy of `<pipeline>_train` decides whether it trains.
Nothing failed: the run ends green with `request_retrain` skipped.

A run triggered with checks in its conf reports those instead, and `monitor` is skipped, so any
system (or person) can report a failing check through the REST API: trigger this DAG with
`{"checks": [{"name": "drift", "passed": false, "detail": "share of drifted features 0.4 > 0.3"}]}`.

A quality check failed under `monitoring.quality.action: block` blocks training on its interval:
`quality_blocked` writes why into the note, and `acknowledge` asks a person in the UI's Required
Actions. **Approve** (with a comment) runs `record_acknowledgement` (`ctloop quality ack`), which
records who, when and why, and training may use the interval again; **Reject** keeps it blocked. No answer
within 45 minutes takes Reject, unless the run's 1-hour `dagrun_timeout` (from the run's start, so the
`monitor` job's time counts) falls first: then the run fails and `acknowledge` is skipped. Either way the
block stays and `ctloop quality ack` can release it later. Checks under `alert` or `block` request no retrain.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import CronDataIntervalTimetable, Param, task
from ctloop_airflow import dagkit
from ctloop_airflow.jobs import job_task

CONFIG = dagkit.settings()
BLOCK = "{{ ti.xcom_pull(task_ids='quality_blocked')"  # what `quality_blocked` found (notes.quality_block)
ANSWER = "{{ ti.xcom_pull(task_ids='acknowledge')"  # the person's answer to `acknowledge`

for spec in dagkit.pipelines(CONFIG):
    requests_asset = dagkit.retrain_requests_asset(spec.name, CONFIG)  # the same (watched) asset as the train DAG
    # data intervals, not trigger times: each run judges the period since the previous one, none left out
    schedule = CronDataIntervalTimetable(spec.monitoring.schedule, timezone="UTC")
    with dagkit.dag(spec, "monitor", schedule=schedule, dagrun_timeout=timedelta(hours=1), doc_md=__doc__):

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def judge(dag_run=None) -> bool:
            """Run `ctloop monitor` unless the run's conf reports checks (a REST or manual report)."""
            return not (dag_run.conf or {}).get("checks")

        monitor = job_task("monitor", ["monitor", "--pipeline", spec.name, "--start",
                                       "{{ data_interval_start.isoformat() }}", "--end",
                                       "{{ data_interval_end.isoformat() }}"], settings=CONFIG)

        @task(trigger_rule="none_failed")
        def checks(dag_run=None, ti=None) -> dict:
            """The monitoring result: the conf's checks, else what `ctloop monitor` found."""
            reported = (dag_run.conf or {}).get("checks")
            return {"checks": reported} if reported else ti.xcom_pull(task_ids="monitor")

        @task(outlets=[requests_asset])
        def request_retrain(result: dict, dag_run=None, ti=None, outlet_events=None, asset=requests_asset,
                            pipeline=spec) -> str:
            """Alert the failed checks' channels; request a retrain carrying the checks' evidence."""
            from airflow.sdk.exceptions import AirflowSkipException
            from ctloop.monitoring.alerts import from_checks
            from ctloop.orchestration.notes import reasons_from_checks
            from ctloop.retrain.policy import evidence_from_checks

            for alert in from_checks(pipeline.name, result, dag_run.run_id):
                dagkit.alert(pipeline, alert, {"ti": ti, "dag_run": dag_run, "run_id": dag_run.run_id})
            reasons = reasons_from_checks(result)
            if not reasons:
                raise AirflowSkipException("every check passed (or none ran): no retrain request")
            reason = "; ".join(reasons)
            outlet_events[asset].extra = {"reason": reason, "requested_by": f"monitor:{dag_run.run_id}",
                                          "source": "monitor", "requested_at": dag_run.run_after.isoformat(),
                                          "evidence": evidence_from_checks(result)}
            dagkit.decision({"ti": ti}, f"retrain requested: {reason}")
            return reason

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def quality_blocked(result: dict, ti=None) -> dict | bool:
            """A failed quality suite blocked training on the interval: say so, and ask a person (`acknowledge`)."""
            from ctloop.orchestration.notes import quality_block

            found = quality_block(result)
            if found is None:
                return False
            dagkit.decision({"ti": ti}, f"training blocked on {found['interval']} to {found['end']} "
                                        f"({', '.join(found['streams'])} failed their suites); Data Docs: "
                                        f"{found['data_docs']}; waiting for a person to acknowledge it")
            return found

        # Required Actions in the UI; unanswered, it rejects after 45 minutes or is skipped when the run's 1-hour
        # timeout falls first (the block stays, `ctloop quality ack` can release it later): the hourly
        # monitoring (one run at a time) is not held up
        acknowledge = ApprovalOperator(
            task_id="acknowledge", subject=f"{BLOCK}['subject'] }}}}", body=f"{BLOCK}['body'] }}}}",
            params={"comment": Param("", type="string", description="Why this data may be trained on (recorded)")},
            defaults="Reject", response_timeout=timedelta(minutes=45))
        record = job_task("record_acknowledgement", [
            "quality", "ack", "--pipeline", spec.name, "--interval", f"{BLOCK}['interval'] }}}}",
            "--end", f"{BLOCK}['end'] }}}}",
            "--by", f"{ANSWER}['responded_by_user']['name'] }}}}",
            "--comment", f"{ANSWER}['params_input'].get('comment') or '' }}}}",
            "--at", f"{ANSWER}['responded_at'] }}}}"], settings=CONFIG)

        @task
        def acknowledged(ti=None) -> None:
            """Who released the interval for training, when and why, in the note."""
            from ctloop.orchestration.notes import acknowledged_line

            dagkit.decision({"ti": ti}, acknowledged_line(ti.xcom_pull(task_ids="record_acknowledgement")))

        result = checks()
        judge() >> monitor >> result
        request_retrain(result)
        quality_blocked(result) >> acknowledge >> record >> acknowledged()
