"""### `<pipeline>_train` — retrain when the policy allows it, and register a better model

Started by any of:

* the schedule (`retrain.schedule` in the pipeline spec), or new features (`ctloop://<pipeline>/features`),
  or a retrain request (`ctloop://<pipeline>/retrain-requests`: the monitor DAG, or a message on the
  Kafka topic `CTLOOP_RETRAIN_TOPIC` watched by the triggerer) — one `AssetOrTimeSchedule`;
* a manual or REST trigger with `{"reason": "..."}` in the run's conf.

Tasks:

1. `requests` gathers the run's retrain requests; `retrain_policy` (`ctloop retrain decide`)
   applies the spec's `retrain` policy — cooldown, one run at a time, daily budget, duplicates
   merged within `merge_window` — and records every decision with its reason in the ledger
   (`<lake>/_state/retrain/<pipeline>/`); `proceed` stops the run there when it was refused (the
   run stays green, the note says why);
2. `training_set` (`ctloop training-set --latest`) → `training_set_ok` (stops the run, its note saying why,
   when the window holds landed data blocked by a failed quality suite that no one acknowledged:
   docs/monitoring.md) → `quality` (`ctloop quality`) → `quality_ok`;
3. `train` (`ctloop train`, on a GPU pod in the kubernetes runtime) → `evaluate` (`ctloop evaluate`,
   candidate vs champion) → `gate_ok`;
4. `register` (`ctloop register`: alias `challenger`) → `registered`;
5. `deploy` (`ctloop deploy`: blue-green — the idle slot loads the new version, answers its golden
   requests, takes the traffic, is watched, and only then becomes `champion`; a refusal or a rollback
   keeps the champion) → `deployed`;
6. `retrain_finish` (teardown: runs whatever happened) closes the run in the ledger with its outcome.

Each decision (policy, quality, gate, registration, deploy: what was switched or why not) is written into
the DAG run's note. A request from monitoring carries its evidence (the failed checks): the note shows it,
the slices it names are gated too (`evaluate --extra-slices`), and the ledger links it to the version the
run registered. A refused gate and a rollback alert the spec's `monitoring.alerts` channels
(docs/monitoring.md).
One run at a time (`max_active_runs=1`); the ledger does not rely on it to decide once. The DAG is
paused when Airflow first sees it, so a new pipeline does not train on an empty lake: unpause it once
its data is in (`make demo` does).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, task
from ctloop_airflow import dagkit
from ctloop_airflow.jobs import job_task

CONFIG = dagkit.settings()
SNAPSHOT = "{{ ti.xcom_pull(task_ids='training_set')['snapshot_id'] }}"
RUN = "{{ ti.xcom_pull(task_ids='train')['run_id'] }}"
VERSION = "{{ ti.xcom_pull(task_ids='register')['version'] }}"
# the spec's deploy.watch unless the Airflow Variable ctloop_deploy_watch says otherwise (`make demo`: 10s)
WATCH = "{{ var.value.get('ctloop_deploy_watch', '') }}"
# the policy's time: when the run started, which only the scheduler sets (a REST client may set run_after)
NOW = "{{ (dag_run.start_date or dag_run.run_after).isoformat() }}"
RESULTS = ("{{ {'quality': ti.xcom_pull(task_ids='quality'), 'evaluation': ti.xcom_pull(task_ids='evaluate'), "
           "'registered': ti.xcom_pull(task_ids='register'), "
           "'refused': (ti.xcom_pull(task_ids='training_set') or {}).get('reason')} | tojson }}")

for spec in dagkit.pipelines(CONFIG):
    name = spec.name
    assets = dagkit.features_asset(name) | dagkit.retrain_requests_asset(name, CONFIG)
    schedule = assets if spec.retrain.schedule is None else AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(spec.retrain.schedule, timezone="UTC"), assets=assets)
    # paused at creation: a new pipeline trains once someone unpauses it, never on an empty lake
    with dagkit.dag(spec, "train", schedule=schedule, dagrun_timeout=timedelta(hours=12), doc_md=__doc__,
                    is_paused_upon_creation=True):

        @task
        def requests(dag_run=None, triggering_asset_events=None, ti=None, name=name) -> list[dict]:
            """This run's retrain requests: schedule, REST/manual conf reason (and evidence), asset events.

            The requests' evidence goes into the note, and the slices it names to `evaluate` (XCom `slices`)."""
            from ctloop.retrain.policy import evidence_lines, extra_slices, requests_from_run

            events = [{"uri": getattr(asset, "uri", str(asset)), "extra": e.extra, "timestamp": e.timestamp.isoformat()}
                      for asset, evs in (triggering_asset_events or {}).items() for e in evs]
            found = requests_from_run(name, run_type=dag_run.run_type, run_after=dag_run.run_after,
                                      conf=dag_run.conf, triggered_by=getattr(dag_run, "triggering_user_name", None),
                                      events=events, started_at=dag_run.start_date)
            for line in evidence_lines(found):
                dagkit.decision({"ti": ti}, line)
            ti.xcom_push(key="slices", value=extra_slices(found))
            return found

        policy = job_task("retrain_policy", [
            "retrain", "decide", "--pipeline", name, "--run-id", "{{ run_id }}", "--now", NOW,
            "--requests", "{{ ti.xcom_pull(task_ids='requests') | tojson }}"], settings=CONFIG)

        @task.short_circuit
        def proceed(ti=None) -> bool:
            """Stop here, green, when the policy refused (every request refused or merged)."""
            result = ti.xcom_pull(task_ids="retrain_policy")
            dagkit.decision({"ti": ti}, result["note"])
            return bool(result["accepted"])

        training_set = job_task("training_set", ["training-set", "--pipeline", name, "--latest"], settings=CONFIG)

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def training_set_ok(ti=None) -> bool:
            from ctloop.orchestration.notes import training_set_verdict

            built, line = training_set_verdict(ti.xcom_pull(task_ids="training_set"))
            if line:
                dagkit.decision({"ti": ti}, line)
            return built

        quality = job_task("quality", ["quality", "--pipeline", name, "--dataset", SNAPSHOT], settings=CONFIG)

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def quality_ok(ti=None) -> bool:
            from ctloop.orchestration.notes import quality_verdict

            passed, line = quality_verdict(ti.xcom_pull(task_ids="quality"))
            dagkit.decision({"ti": ti}, line)
            return passed

        train = job_task("train", ["train", "--pipeline", name, "--dataset", SNAPSHOT], settings=CONFIG,
                         kind="training")
        evaluate = job_task("evaluate", ["evaluate", "--pipeline", name, "--run-id", RUN, "--extra-slices",
                                         "{{ ti.xcom_pull(task_ids='requests', key='slices') | tojson }}"],
                            settings=CONFIG)

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def gate_ok(ti=None, run_id=None, pipeline=spec) -> bool:
            from ctloop.monitoring.alerts import gate_refused
            from ctloop.orchestration.notes import gate_verdict

            result = ti.xcom_pull(task_ids="evaluate")
            passed, line = gate_verdict(result, pipeline.gate.primary_metric)
            dagkit.decision({"ti": ti}, line)
            if not passed:
                dagkit.alert(pipeline, gate_refused(pipeline.name, result, line, run_id), {"ti": ti, "run_id": run_id})
            return passed

        register = job_task("register", ["register", "--pipeline", name, "--run-id", RUN], settings=CONFIG)

        @task
        def registered(ti=None) -> None:
            """The registered challenger, in the note; the deploy goes after this task."""
            from ctloop.orchestration.notes import registered_line

            dagkit.decision({"ti": ti}, registered_line(ti.xcom_pull(task_ids="register")))

        deploy = job_task("deploy", ["deploy", "--pipeline", name, "--version", VERSION, "--watch", WATCH,
                                     "--reason", "registered by train run {{ run_id }}"],
                          settings=CONFIG, kind="deploy")

        @task
        def deployed(ti=None, run_id=None, pipeline=spec) -> None:
            """What the deploy switched, or why it did not (refused, rolled back), in the note; a rollback alerts."""
            from ctloop.monitoring.alerts import rollback
            from ctloop.orchestration.notes import deploy_line

            result = ti.xcom_pull(task_ids="deploy")
            line = deploy_line(result)
            dagkit.decision({"ti": ti}, line)
            if result:
                dagkit.alert(pipeline, rollback(pipeline.name, result, line, run_id), {"ti": ti, "run_id": run_id})

        finish = job_task("retrain_finish", [
            "retrain", "finish", "--pipeline", name, "--run-id", "{{ run_id }}", "--now", NOW,
            "--results", RESULTS], settings=CONFIG)

        (requests() >> policy >> proceed() >> training_set >> training_set_ok() >> quality >> quality_ok() >> train
         >> evaluate >> gate_ok() >> register >> registered() >> deploy >> deployed()
         >> finish.as_teardown(setups=policy))
