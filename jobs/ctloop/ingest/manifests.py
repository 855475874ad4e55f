"""What landed: the lander's manifests read back, for lineage (offsets behind a snapshot) and windows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from ctloop.config.spec import PipelineSpec
from ctloop.lake.hours import HOUR, parse_time
from ctloop.lake.paths import CLEAN_MARKER_RE, clean_markers_prefix, hour_of, manifest_prefix
from ctloop.lake.store import Lake

# An event is never later than the time its message was sent, beyond this much clock skew between the
# producer and the broker. An event time past that is a producer's bug or a forged timestamp, and must
# not move any watermark (one event dated 2099 would otherwise make every label look mature).
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _raw_files(lake: Lake, spec: PipelineSpec, stream: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(manifest, raw file entry) of every landed raw file of ``stream``."""
    for path in lake.list(f"{manifest_prefix(spec.name)}/{spec.events[stream].topic}/"):
        manifest = json.loads(lake.read(path))
        for f in manifest.get("files", []):
            if f.get("kind") == "raw":
                yield manifest, f


def source_offsets(lake: Lake, spec: PipelineSpec, stream: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Kafka offsets and lake partitions behind [start, end) of a stream, from the lander's manifests."""
    topic = spec.events[stream].topic
    parts: set[str] = set()
    offsets: dict[str, list[int]] = {}
    for manifest, f in _raw_files(lake, spec, stream):
        if not (start <= hour_of(f["lake_partition"]) < end):
            continue
        parts.add(f["lake_partition"])
        span = offsets.setdefault(str(manifest["partition"]), [f["first_offset"], f["last_offset"]])
        span[0], span[1] = min(span[0], f["first_offset"]), max(span[1], f["last_offset"])
    return {"topic": topic, "partitions": sorted(parts),
            "offsets": {p: {"first": v[0], "last": v[1]}
                        for p, v in sorted(offsets.items(), key=lambda kv: int(kv[0]))}}


def _credible_max(f: dict[str, Any]) -> datetime:
    """A file's latest event time, capped at the time its latest message was sent (plus clock skew)."""
    latest = parse_time(f["max_event_time"])
    sent = f.get("max_kafka_time")
    return min(latest, parse_time(sent) + MAX_CLOCK_SKEW) if sent else latest


def landed_span(lake: Lake, spec: PipelineSpec, stream: str | None = None) -> tuple[datetime, datetime]:
    """Whole hours covering the landed events of ``stream`` (default: the primary), from the lander's manifests.

    The end is the latest *credible* event time: an event dated after its message was sent does not move it.
    """
    stream = stream or spec.primary
    firsts, lasts = [], []
    for _, f in _raw_files(lake, spec, stream):
        firsts.append(parse_time(f["min_event_time"]))
        lasts.append(_credible_max(f))
    if not firsts:
        raise ValueError(f"no landed {stream} events in {lake.uri}: run `ctloop ingest` first")
    first = min(firsts).replace(minute=0, second=0, microsecond=0)
    last = max(lasts).replace(minute=0, second=0, microsecond=0) + HOUR
    return first, last


def cleaned_until(lake: Lake, spec: PipelineSpec, stream: str) -> datetime | None:
    """How far ``ctloop spark clean`` has built ``stream``: the latest ``until`` of its day markers (the end of
    the day, or of the interval that last built it when that ended inside the day); None: nothing cleaned yet."""
    prefix = f"{clean_markers_prefix(spec.name, stream)}/"
    markers = [p for p in lake.list(prefix) if CLEAN_MARKER_RE.fullmatch(p[len(prefix):])]
    if not markers:
        return None
    return parse_time(json.loads(lake.read(markers[-1]))["until"])  # the latest day holds the latest until


def label_watermark(lake: Lake, spec: PipelineSpec) -> datetime | None:
    """How far the label stream is known: landed *and* cleaned up to here (None: no labels yet).

    A transaction without a label is a negative only once its maturity horizon is behind this point,
    the label stream's own watermark, not the transactions': labels land on their own schedule.
    """
    cleaned = cleaned_until(lake, spec, spec.labels.events)
    if cleaned is None:
        return None
    try:
        _, landed = landed_span(lake, spec, spec.labels.events)
    except ValueError:
        return None
    return min(cleaned, landed)


def hours_interval(partitions: Iterable[str]) -> list[str] | None:
    """[start, end) in whole hours covering lake partitions (``event_date=…/event_hour=…``); None for none.

    Airflow's raw asset events carry it, so the features DAG recomputes exactly the hours that changed.
    """
    hours = sorted({hour_of(p) for p in partitions})
    if not hours:
        return None
    return [hours[0].isoformat(), (hours[-1] + HOUR).isoformat()]


def batches_after(lake: Lake, spec: PipelineSpec, cursor: dict[str, int]) -> list[dict[str, Any]]:
    """The manifests of the batches landed after ``cursor`` (``"topic:partition"`` → first offset of the last
    batch already taken), in offset order per partition. A partition missing from the cursor starts from its
    first batch.

    Only manifests past the cursor are read: the first offset is in the name (``<topic>+<partition>+<first>``).
    A manifest is the last object of its batch, so one that exists describes files that are all written;
    the lander lands a partition's batches in offset order, one at a time, and a batch landed again
    (after a crash or by a new owner) has the same name and the same files.
    """
    found = []
    for event in spec.events.values():
        for path in lake.list(f"{manifest_prefix(spec.name)}/{event.topic}/"):
            name = path.rsplit("/", 1)[-1].removesuffix(".json")
            topic, partition, first = name.rsplit("+", 2)
            if topic != event.topic or int(first) <= cursor.get(f"{topic}:{int(partition)}", -1):
                continue
            found.append((topic, int(partition), int(first), path))
    return [json.loads(lake.read(path)) for *_, path in sorted(found)]
