"""### `<pipeline>_ingest` — land new events (or let the service land them), announce what landed

Every 10 minutes. `CTLOOP_LANDING` says who lands the pipeline's Kafka topics in the lake:

* `dag` (the default of the `local` runtime): this DAG does. `land` runs
  `ctloop ingest --pipeline P --until-caught-up`, which lands exactly once and stops once it has
  caught up; then the run announces.
* `service` (the default of the `kubernetes` runtime): a long-running lander does (the
  `ctloop-lander` Deployment, `ctloop ingest --all --follow`). This DAG only announces; it never joins
  the consumer group, so it causes no rebalances.

Either way every landed batch reaches Airflow: `announce` (`ctloop ingest --pipeline P --announce`)
reads the lander's manifests written since the announce cursor (kept in the lake) and sums them up
like a landing. When raw events landed, `publish_raw` emits an event on the asset
`ctloop://<pipeline>/raw` whose extra holds the event-time `interval` (whole hours) they touched; that
event schedules `<pipeline>_features`. Only then does `announced` move the cursor, so a run that fails
or is retried before that announces the same batches again (at least once; features are idempotent
per interval). A run that found nothing new ends green with `publish_raw` and `announced` skipped.

One run at a time: in `dag` mode the lander's consumer group would otherwise split the partitions
between runs, and the cursor moves in one run's order.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task
from ctloop_airflow import dagkit
from ctloop_airflow.jobs import job_task

CONFIG = dagkit.settings()
CURSOR = "{{ ti.xcom_pull(task_ids='announce')['cursor'] | tojson }}"

for spec in dagkit.pipelines(CONFIG):
    raw = dagkit.raw_asset(spec.name)
    with dagkit.dag(spec, "ingest", schedule=timedelta(minutes=10), dagrun_timeout=timedelta(hours=1), doc_md=__doc__):
        announce = job_task("announce", ["ingest", "--pipeline", spec.name, "--announce"], settings=CONFIG,
                            execution_timeout=timedelta(minutes=10))
        if CONFIG.landing == "dag":
            land = job_task("land", ["ingest", "--pipeline", spec.name, "--until-caught-up"], settings=CONFIG,
                            execution_timeout=timedelta(minutes=40))
            land >> announce

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

        announced = job_task("announced", ["ingest", "--pipeline", spec.name, "--announced", CURSOR],
                             settings=CONFIG, execution_timeout=timedelta(minutes=10))
        publish_raw(announce.output) >> announced
