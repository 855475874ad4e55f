"""Every path in the lake, in one place: what lives where, relative to the lake root.

Data that people and Spark read sits at the top (``raw/``, ``curated/``, ``features/``,
``training_sets/``); bookkeeping sits under folders starting with ``_`` (dead letters, the lander's
manifests and intents, job markers, watermarks, the retrain ledger), which dataset readers skip.
Event data is partitioned by event hour: ``event_date=YYYY-MM-DD/event_hour=HH``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

PARTITION_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})/event_hour=(\d{2})")


# -- event-hour partitions ----------------------------------------------------------------------------
def partition_of(hour: datetime) -> str:
    return f"event_date={hour:%Y-%m-%d}/event_hour={hour:%H}"


def hour_of(part: str) -> datetime:
    """The hour a partition (or any path containing one) holds."""
    match = PARTITION_RE.search(part)
    if match is None:
        raise ValueError(f"not a lake partition: {part!r}")
    return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


# -- landing (the lander) -----------------------------------------------------------------------------
def raw_prefix(pipeline: str, topic: str) -> str:
    return f"raw/{pipeline}/{topic}"


def dlq_prefix(pipeline: str, topic: str) -> str:
    return f"_dlq/{pipeline}/{topic}"


def manifest_prefix(pipeline: str) -> str:
    return f"_manifests/{pipeline}"


def intent_path(pipeline: str, topic: str, partition: int) -> str:
    return f"_state/lander/{pipeline}/{topic}+{partition}.json"


# -- Spark jobs ---------------------------------------------------------------------------------------
def curated_prefix(pipeline: str, stream: str) -> str:
    return f"curated/{pipeline}/{stream}"


def quarantine_prefix(pipeline: str, stream: str) -> str:
    return f"quarantine/{pipeline}/{stream}"


def features_prefix(pipeline: str, view: str) -> str:
    return f"features/{pipeline}/{view}"


def clean_markers_prefix(pipeline: str, stream: str) -> str:
    """One marker per cleaned hour: the raw files it was built from, its rows and checksum."""
    return f"_state/clean/{pipeline}/{stream}"


def clean_marker(pipeline: str, stream: str, part: str) -> str:
    return f"{clean_markers_prefix(pipeline, stream)}/{part}.json"


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
