"""What every ctloop DAG file shares: the pipeline specs, asset names, default arguments.

Light by design (pydantic and yaml only): DAG files import it at parse time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset
from ctloop.config.settings import Settings, load_settings
from ctloop.config.spec import PipelineSpec, load_spec
from ctloop.orchestration.notes import DECISION_KEY

log = logging.getLogger(__name__)
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)  # static, as Airflow asks; catchup is off everywhere


def settings() -> Settings:
    return load_settings()


def pipelines(config: Settings) -> list[PipelineSpec]:
    """Every spec in CTLOOP_PIPELINES_DIR: one set of DAGs per pipeline."""
    return [load_spec(path.stem, config.pipelines_dir) for path in sorted(config.pipelines_dir.glob("*.yaml"))]


def raw_asset(pipeline: str) -> Asset:
    """New raw events landed in the lake; the event's extra holds the event-time ``interval``."""
    return Asset(f"ctloop://{pipeline}/raw", group="ctloop")


def features_asset(pipeline: str) -> Asset:
    """Features recomputed and materialized for the event's ``interval``."""
    return Asset(f"ctloop://{pipeline}/features", group="ctloop")


def retrain_requests_asset(pipeline: str, config: Settings | None = None) -> Asset:
    """Retrain requests: events come from the monitor DAG and, watched, from the Kafka topic.

    Every DAG that names this asset must pass ``config`` (the same watcher): Airflow keeps one
    definition per URI, and a definition without the watcher removes the Kafka trigger.
    """
    uri = f"ctloop://{pipeline}/retrain-requests"
    if config is None:
        return Asset(uri, group="ctloop")
    from airflow.sdk import AssetWatcher

    from ctloop_airflow.kafka_trigger import RetrainRequestTrigger

    trigger = RetrainRequestTrigger(pipeline=pipeline, topic=config.retrain_topic,
                                    group_id=f"ctloop-retrain-{pipeline}")
    return Asset(uri, group="ctloop", watchers=[AssetWatcher(name=f"kafka_{pipeline}_retrain", trigger=trigger)])


def dag(spec: PipelineSpec, subject: str, *, schedule: Any, doc_md: str | None, dagrun_timeout: timedelta,
        **extra: Any) -> DAG:
    """The ``<pipeline>_<subject>`` DAG with the conventions every ctloop DAG shares (docs/design.md, rule 9):
    static start date, no catchup, one run at a time, owner and retries, tags, the file's docstring as doc."""
    return DAG(dag_id=f"{spec.name}_{subject}", schedule=schedule, start_date=START_DATE, catchup=False,
               max_active_runs=1, dagrun_timeout=dagrun_timeout, default_args=default_args(spec),
               tags=tags(spec, subject), doc_md=doc_md, **extra)


def default_args(spec: PipelineSpec, **extra: Any) -> dict[str, Any]:
    """Owner and retries; and, when the spec names channels for ``task_failed``, Airflow notifiers that tell
    them of a task that failed after its retries."""
    args: dict[str, Any] = {"owner": spec.owner, "retries": 2, "retry_delay": timedelta(minutes=2)}
    if any("task_failed" in c.on for c in spec.monitoring.alerts):
        from ctloop.monitoring.alerts import task_failed

        from ctloop_airflow.notifiers import notifiers

        args["on_failure_callback"] = notifiers(spec, task_failed(spec.name), templated=True)
    return {**args, **extra}


def tags(spec: PipelineSpec, *more: str) -> list[str]:
    return ["ctloop", f"pipeline:{spec.name}", *more]


def alert(spec: PipelineSpec, alert: Any, context: Any) -> int:
    """Tell the spec's channels of ``alert`` (a ``ctloop.monitoring.alerts.Alert``, or None: nothing to say)."""
    if alert is None or not spec.monitoring.alerts:
        return 0
    from ctloop_airflow.notifiers import send

    return send(spec, alert, context)


def decision(context: Any, line: str) -> None:
    """Record one decision of this run: the task log and, through the listener, the run's note."""
    context["ti"].xcom_push(key=DECISION_KEY, value=line)
    log.info("decision: %s", line)
