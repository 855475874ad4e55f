"""Blocked intervals: landed data that failed its quality suite under ``monitoring.quality.action: block``.

A block is a record in the lake naming the interval, the failed streams and expectations and the Data
Docs; training refuses any range that overlaps a block until a person acknowledges it (the monitor
DAG's approval task in the Airflow UI, or ``ctloop quality ack``). Both records are created once and
never rewritten, so a re-run of the monitor cannot un-block an interval and an acknowledgement says
for good who released it, when and why. The training-set step reads them before it builds anything.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ctloop.lake.hours import parse_time
from ctloop.lake.paths import quality_ack_path, quality_block_path, quality_blocks_prefix
from ctloop.lake.store import Lake


def block(lake: Lake, pipeline: str, start: datetime, end: datetime, streams: dict[str, list[str]],
          data_docs: str | None, at: datetime) -> dict[str, Any]:
    """Block training on [start, end) for the failures in ``streams`` (stream → failed expectations).

    The first block of an interval stands: a later run judging it again returns that record.
    """
    record = {"pipeline": pipeline, "start": start.isoformat(), "end": end.isoformat(), "streams": streams,
              "data_docs": data_docs, "blocked_at": at.isoformat()}
    path = quality_block_path(pipeline, start)
    if not lake.create(path, json.dumps(record, indent=1).encode()):
        record = json.loads(lake.read(path))
    return {**record, "record": lake.url(path)}


def blocks(lake: Lake, pipeline: str) -> list[dict[str, Any]]:
    """Every block of the pipeline, oldest first, each with its ``acknowledged`` record (None: still blocking)."""
    found = []
    for path in lake.list(f"{quality_blocks_prefix(pipeline)}/"):
        if not path.endswith(".json"):
            continue
        record = json.loads(lake.read(path))
        ack = quality_ack_path(pipeline, parse_time(record["start"]))
        found.append({**record, "record": lake.url(path),
                      "acknowledged": json.loads(lake.read(ack)) if lake.exists(ack) else None})
    return found


def unacknowledged(lake: Lake, pipeline: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The blocks overlapping [start, end) that no one has acknowledged."""
    return [b for b in blocks(lake, pipeline) if b["acknowledged"] is None
            and parse_time(b["start"]) < end and start < parse_time(b["end"])]


def refusal(pipeline: str, start: datetime, end: datetime, blocking: list[dict[str, Any]]) -> str:
    """Why training on [start, end) is refused, and how to release it: one paragraph for the note and the log."""
    parts = []
    for b in blocking:
        failed = "; ".join(f"{stream}: {', '.join(lines)}" for stream, lines in b["streams"].items())
        docs = f" (Data Docs: {b['data_docs']})" if b.get("data_docs") else ""
        parts.append(f"interval {b['start']} to {b['end']} failed its data-quality suite: {failed}{docs}")
    return (f"training on {start.isoformat()} to {end.isoformat()} refused: landed data blocked by "
            f"monitoring.quality.action=block and not acknowledged: {' | '.join(parts)}. Acknowledge in the "
            f"Airflow UI (Required Actions of the {pipeline}_monitor run) or with `ctloop quality ack --pipeline "
            f"{pipeline} --interval {blocking[0]['start']} --by <you> --comment <why>`")


def acknowledge(lake: Lake, pipeline: str, interval_start: datetime, by: str, comment: str,
                at: datetime) -> dict[str, Any]:
    """Release the block of the interval starting at ``interval_start``: who, when and why, recorded once.

    A second acknowledgement changes nothing and returns the first (``already``: true).
    """
    path = quality_block_path(pipeline, interval_start)
    if not lake.exists(path):
        known = [b["start"] for b in blocks(lake, pipeline) if b["acknowledged"] is None]
        raise ValueError(f"no blocked interval of {pipeline} starts at {interval_start.isoformat()} "
                         f"(unacknowledged blocks: {', '.join(known) or 'none'})")
    if not by.strip():
        raise ValueError("an acknowledgement needs who gives it (--by)")
    block_record = json.loads(lake.read(path))
    record = {"pipeline": pipeline, "start": block_record["start"], "end": block_record["end"], "by": by,
              "comment": comment, "acknowledged_at": at.isoformat()}
    ack = quality_ack_path(pipeline, interval_start)
    created = lake.create(ack, json.dumps(record, indent=1).encode())
    if not created:
        record = json.loads(lake.read(ack))
    return {**record, "already": not created, "record": lake.url(ack), "block": lake.url(path)}
