"""### `<pipeline>_features` — clean, compute and serve features for what just landed

Scheduled on the asset `ctloop://<pipeline>/raw`. The interval is the union of the triggering
events' intervals (several landings may be merged into one run). Three job commands, each keyed
by that interval so a rerun rewrites the same partitions:

1. `ctloop spark clean` — raw → curated (dedupe, late data within `features.lateness`);
2. `ctloop spark features` — curated → feature rows (the spec's views);
3. `ctloop materialize` — feature rows → the Feast online store.

It then emits `ctloop://<pipeline>/features` with the same `interval`, which (with the schedule
and retrain requests) can start `<pipeline>_train`. Triggered by hand, give `{"start": ..., "end": ...}`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task
from ctloop_airflow import dagkit
from ctloop_airflow.jobs import job_task

CONFIG = dagkit.settings()
START = "{{ ti.xcom_pull(task_ids='interval')[0] }}"
END = "{{ ti.xcom_pull(task_ids='interval')[1] }}"

for spec in dagkit.pipelines(CONFIG):
    if spec.features is None:
        continue
    raw, features = dagkit.raw_asset(spec.name), dagkit.features_asset(spec.name)
    with dagkit.dag(spec, "features", schedule=[raw], dagrun_timeout=timedelta(hours=4), doc_md=__doc__):

        @task
        def interval(triggering_asset_events=None, dag_run=None, raw=raw) -> list[str]:
            """The union of the triggering events' intervals (or the run conf's start/end)."""
            from ctloop.orchestration.notes import union_interval

            extras = [e.extra.get("interval") for e in (triggering_asset_events or {}).get(raw, [])]
            conf = dag_run.conf or {}
            if conf.get("start") and conf.get("end"):
                extras.append([conf["start"], conf["end"]])
            return union_interval(extras)

        window = ["--pipeline", spec.name, "--start", START, "--end", END]
        clean = job_task("spark_clean", ["spark", "clean", *window], settings=CONFIG)
        build = job_task("spark_features", ["spark", "features", *window], settings=CONFIG)
        serve = job_task("materialize", ["materialize", *window], settings=CONFIG)

        @task(outlets=[features])
        def publish_features(span: list[str], ti=None, outlet_events=None, features=features) -> list[str]:
            from ctloop.orchestration.notes import features_line

            dagkit.decision({"ti": ti}, features_line(span, ti.xcom_pull(task_ids="materialize")["rows"]))
            outlet_events[features].extra = {"interval": span}
            return span

        span = interval()
        span >> clean >> build >> serve >> publish_features(span)
