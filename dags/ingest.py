"""### `<pipeline>_ingest` — land new events, announce what landed

Every 10 minutes the lander (`ctloop ingest --pipeline P --until-caught-up`) lands the pipeline's
Kafka topics in the lake as Parquet, exactly once, and stops once it has caught up. When it landed
anything, the run emits an event on the asset `ctloop://<pipeline>/raw` whose extra holds the
event-time `interval` (whole hours) it touched; that event schedules `<pipeline>_features`. A run
that found nothing new ends green with `publish_raw` skipped.

One run at a time: the lander's consumer group would otherwise split the partitions between runs.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task
from ctloop_airflow import dagkit
from ctloop_airflow.jobs import job_task

CONFIG = dagkit.settings()

for spec in dagkit.pipelines(CONFIG):
    raw = dagkit.raw_asset(spec.name)
    with dagkit.dag(spec, "ingest", schedule=timedelta(minutes=10), dagrun_timeout=timedelta(hours=1), doc_md=__doc__):
        land = job_task("land", ["ingest", "--pipeline", spec.name, "--until-caught-up"], settings=CONFIG,
                        execution_timeout=timedelta(minutes=50))

        @task(outlets=[raw])
        def publish_raw(summary: dict, ti=None, outlet_events=None, raw=raw) -> list[str]:
            """Emit the raw asset event with the landed interval; skip when nothing landed."""
            from airflow.sdk.exceptions import AirflowSkipException
            from ctloop.orchestration.notes import landed_interval, landed_line

            interval = landed_interval(summary)
            dagkit.decision({"ti": ti}, landed_line(summary))
            if interval is None:
                raise AirflowSkipException("nothing new landed")
            outlet_events[raw].extra = {"interval": interval, "landed": summary["landed"],
                                        "dead_letters": summary.get("dead_letters", 0)}
            return interval

        publish_raw(land.output)
