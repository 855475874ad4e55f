"""Every path in the lake, in one place: what lives where, relative to the lake root.

Data that people and Spark read sits at the top (``raw/``, ``curated/``, ``features/``,
``training_sets/``); bookkeeping sits under folders starting with ``_`` (dead letters, the lander's
manifests and intents, job markers, watermarks, the retrain ledger), which dataset readers skip.
Event data is partitioned by event time: the lander's raw files by hour (``event_date=YYYY-MM-DD/event_hour=HH``,
one file per Kafka segment and hour, so a segment lands in place), everything Spark writes by day
(``event_date=YYYY-MM-DD``: few, large files that Feast and DuckDB scan quickly).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote

HOUR_PARTITION_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})/event_hour=(\d{2})")
DAY_PARTITION_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})")


# -- event-time partitions ----------------------------------------------------------------------------
def hour_partition(hour: datetime) -> str:
    """The raw lake's partition of an event hour."""
    return f"event_date={hour:%Y-%m-%d}/event_hour={hour:%H}"


def hour_of(part: str) -> datetime:
    """The hour a raw partition (or any path containing one) holds."""
    match = HOUR_PARTITION_RE.search(part)
    if match is None:
        raise ValueError(f"not a raw lake partition: {part!r}")
    return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def day_partition(day: datetime) -> str:
    """The curated, quarantine and feature partition of an event day."""
    return f"event_date={day:%Y-%m-%d}"


def day_of(part: str) -> datetime:
    """The day a partition (or any path containing one, raw or not) belongs to."""
    match = DAY_PARTITION_RE.search(part)
    if match is None:
        raise ValueError(f"not a lake partition: {part!r}")
    return datetime.strptime(match.group(1), "%Y-%m-%d").replace(tzinfo=UTC)


# -- landing (the lander) -----------------------------------------------------------------------------
def raw_prefix(pipeline: str, topic: str) -> str:
    return f"raw/{pipeline}/{topic}"


def dlq_prefix(pipeline: str, topic: str) -> str:
    return f"_dlq/{pipeline}/{topic}"


def manifest_prefix(pipeline: str) -> str:
    return f"_manifests/{pipeline}"


def intent_path(pipeline: str, topic: str, partition: int) -> str:
    """A partition's single write intent, as landers before fencing wrote it (read once, to clean up)."""
    return f"_state/lander/{pipeline}/{topic}+{partition}.json"


def intents_prefix(pipeline: str, topic: str, partition: int) -> str:
    """A partition's ownership claims and write intents, all created once and never overwritten."""
    return f"_state/lander/{pipeline}/{topic}+{partition}"


def claim_path(pipeline: str, topic: str, partition: int, epoch: int) -> str:
    """The claim of the ``epoch``-th owner of a partition (one per assignment; the highest epoch fences the rest)."""
    return f"{intents_prefix(pipeline, topic, partition)}/{epoch:010d}.json"


def batch_intent_path(pipeline: str, topic: str, partition: int, epoch: int, first_offset: int) -> str:
    """The intent of one batch written by the ``epoch``-th owner: its segments and the objects it writes."""
    return f"{intents_prefix(pipeline, topic, partition)}/{epoch:010d}-{first_offset:020d}.json"


def manifest_path(pipeline: str, topic: str, partition: int, first_offset: int) -> str:
    """The manifest of the batch of ``topic``'s ``partition`` that starts at ``first_offset``."""
    return f"{manifest_prefix(pipeline)}/{topic}/{topic}+{partition}+{first_offset:020d}.json"


def announce_cursor_path(pipeline: str) -> str:
    """Per topic and partition, the first offset of the last batch Airflow heard of (``ctloop ingest --announce``)."""
    return f"_state/announce/{pipeline}/cursor.json"


# -- Spark jobs ---------------------------------------------------------------------------------------
def curated_prefix(pipeline: str, stream: str) -> str:
    return f"curated/{pipeline}/{stream}"


def quarantine_prefix(pipeline: str, stream: str) -> str:
    return f"quarantine/{pipeline}/{stream}"


def features_prefix(pipeline: str, view: str) -> str:
    return f"features/{pipeline}/{view}"


def clean_markers_prefix(pipeline: str, stream: str) -> str:
    """One marker per cleaned day: the raw files it was built from, its rows and checksum, how far it is known."""
    return f"_state/clean/{pipeline}/{stream}"


CLEAN_MARKER_RE = re.compile(r"event_date=\d{4}-\d{2}-\d{2}\.json")  # a marker's name in its stream's folder


def clean_marker(pipeline: str, stream: str, day_part: str) -> str:
    return f"{clean_markers_prefix(pipeline, stream)}/{day_part}.json"


def features_state(pipeline: str, view: str) -> str:
    return f"_state/features/{pipeline}/{view}.json"


# -- Feast, training, retraining ----------------------------------------------------------------------
def watermark_path(project: str, pipeline: str, view: str) -> str:
    """How far a view is materialized into the online store (kept outside Feast's registry)."""
    return f"_state/feast/{project}/{pipeline}/{view}.json"


def snapshots_prefix(pipeline: str) -> str:
    return f"training_sets/{pipeline}"


def snapshot_prefix(pipeline: str, snapshot_id: str) -> str:
    return f"{snapshots_prefix(pipeline)}/{snapshot_id}"


def ledger_prefix(pipeline: str) -> str:
    return f"_state/retrain/{pipeline}"


def ledger_record(pipeline: str, at: datetime, kind: str, key: str) -> str:
    """One object of the ledger's audit log (a decision or a finish), named to list in time order."""
    return f"{ledger_prefix(pipeline)}/{at:%Y%m%dT%H%M%S}-{kind}-{key}.json"


def ledger_accepted(pipeline: str, seq: int) -> str:
    """The ``seq``-th accepted run (from 1): created only where absent, so one decider per number wins."""
    return f"{ledger_prefix(pipeline)}/accepted/{seq:08d}.json"


def ledger_head(pipeline: str) -> str:
    """A hint: the last number of the accepted chain known taken (readers probe forward from it)."""
    return f"{ledger_prefix(pipeline)}/accepted/head.json"


def ledger_run(pipeline: str, run_id: str) -> str:
    """A train run's decisions, found by its id (how a retried decision replays)."""
    return f"{ledger_prefix(pipeline)}/runs/{quote(run_id, safe=':+')}.json"


def ledger_finished(pipeline: str, run_id: str) -> str:
    """A train run's finish: present once the run reported how it ended."""
    return f"{ledger_prefix(pipeline)}/finished/{quote(run_id, safe=':+')}.json"


# -- deploy -------------------------------------------------------------------------------------------
def deploy_prefix(pipeline: str) -> str:
    """Every blue-green deploy and rollback of a pipeline, one folder each."""
    return f"_state/deploy/{pipeline}"


def deploy_record(pipeline: str, deploy_id: str, seq: int, kind: str) -> str:
    """One step of a deploy (started, refused, switched, rolled_back, promoted, …), named to list in order."""
    return f"{deploy_prefix(pipeline)}/{deploy_id}/{seq:02d}-{kind}.json"


# -- monitoring: data quality -------------------------------------------------------------------------
def _stamp(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%S}"


def _span(start: datetime, end: datetime) -> str:
    """One judged interval, by start and end: intervals that share a start (an hour, then a longer re-run)
    stay apart, and names sort by start."""
    return f"{_stamp(start)}-{_stamp(end)}"


def quality_docs_prefix(pipeline: str, start: datetime, end: datetime) -> str:
    """The Great Expectations Data Docs of one judged interval (``index.html`` and its pages), for people."""
    return f"_monitoring/{pipeline}/quality/docs/{_span(start, end)}"


def quality_volume_prefix(pipeline: str, stream: str) -> str:
    """One record per judged interval of a stream: how many events landed (the volume norm reads them back)."""
    return f"_state/quality/{pipeline}/volume/{stream}"


def quality_volume_record(pipeline: str, stream: str, start: datetime, end: datetime) -> str:
    return f"{quality_volume_prefix(pipeline, stream)}/{_span(start, end)}.json"


def quality_volume_before(pipeline: str, stream: str, start: datetime) -> str:
    """Sorts after the volume record of every interval starting before ``start``, before all others."""
    return f"{quality_volume_prefix(pipeline, stream)}/{_stamp(start)}"


def quality_blocks_prefix(pipeline: str) -> str:
    """Intervals whose landed data failed its suite under ``action: block``: training refuses them."""
    return f"_state/quality/{pipeline}/blocked"


def quality_block_path(pipeline: str, start: datetime, end: datetime) -> str:
    """The block of one interval [start, end): created once, never rewritten."""
    return f"{quality_blocks_prefix(pipeline)}/{_span(start, end)}.json"


def quality_ack_path(pipeline: str, start: datetime, end: datetime) -> str:
    """A person's acknowledgement of the blocked interval [start, end) (who, when, why): created once; it
    un-blocks training."""
    return f"_state/quality/{pipeline}/acknowledged/{_span(start, end)}.json"


# -- monitoring: the monitor command ------------------------------------------------------------------
def monitor_prefix(pipeline: str, start: datetime, end: datetime) -> str:
    """One judged interval's result (``result.json``), drift reports (``*.html``) and metrics (``metrics.prom``)."""
    return f"_monitoring/{pipeline}/intervals/{_span(start, end)}"


def monitor_latest_metrics(pipeline: str) -> str:
    """The last judged interval's metrics (``metrics.prom``), which the local stack's ``/metrics`` serves."""
    return f"_monitoring/{pipeline}/latest/metrics.prom"


def reference_scores_path(pipeline: str, snapshot_id: str, version: str) -> str:
    """Model ``version``'s scores of its reference sample of snapshot ``snapshot_id`` (computed once, then read)."""
    return f"_state/monitoring/{pipeline}/reference_scores/{snapshot_id}-v{version}.parquet"
