"""Blocked intervals: landed data that failed its quality suite under ``monitoring.quality.action: block``.

A block is a record in the lake naming the interval, the failed streams and expectations and the Data
Docs; training refuses any range that overlaps a block on a stream it reads until a person
acknowledges it (the monitor DAG's approval task in the Airflow UI, or ``ctloop quality ack``). Both
records are keyed by the interval's start and end, created once and never rewritten, so a re-run of the
monitor cannot un-block an interval and an acknowledgement says for good who released it, when and why.
The training-set step reads them before it builds anything.
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

    Blocks are keyed by start and end, so a longer run over an hour blocked before is a block of its own.
    The first block of an interval stands: a later run judging the same interval again returns that record.
    """
    record = {"pipeline": pipeline, "start": start.isoformat(), "end": end.isoformat(), "streams": streams,
              "data_docs": data_docs, "blocked_at": at.isoformat()}
    path = quality_block_path(pipeline, start, end)
    if not lake.create(path, json.dumps(record, indent=1).encode()):
        record = json.loads(lake.read(path))
    return {**record, "record": lake.url(path)}


def blocks(lake: Lake, pipeline: str) -> list[dict[str, Any]]:
    """Every block of the pipeline, by start, each with its ``acknowledged`` record (None: still blocking)."""
    found = []
    for path in lake.list(f"{quality_blocks_prefix(pipeline)}/"):
        if not path.endswith(".json"):
            continue
        record = json.loads(lake.read(path))
        ack = quality_ack_path(pipeline, parse_time(record["start"]), parse_time(record["end"]))
        found.append({**record, "record": lake.url(path),
                      "acknowledged": json.loads(lake.read(ack)) if lake.exists(ack) else None})
    return found


def unacknowledged(lake: Lake, pipeline: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The blocks overlapping [start, end) that no one has acknowledged."""
    return [b for b in blocks(lake, pipeline) if b["acknowledged"] is None
            and parse_time(b["start"]) < end and start < parse_time(b["end"])]


def refusal(pipeline: str, start: datetime, end: datetime, blocking: list[dict[str, Any]],
            reads: dict[str, str]) -> str:
    """Why training on [start, end) is refused, and how to release it: one paragraph for the note and the log.

    ``blocking`` holds the blocks with the failed streams that refuse training; ``reads`` says what training
    reads each of them for (stream → role).
    """
    parts = []
    for b in blocking:
        failed = "; ".join(f"stream {stream} ({reads[stream]}): {', '.join(lines)}"
                           for stream, lines in b["streams"].items())
        docs = f" (Data Docs: {b['data_docs']})" if b.get("data_docs") else ""
        parts.append(f"interval {b['start']} to {b['end']} failed its data-quality suite: {failed}{docs}")
    first = blocking[0]
    return (f"training on {start.isoformat()} to {end.isoformat()} refused: landed data blocked by "
            f"monitoring.quality.action=block and not acknowledged: {' | '.join(parts)}. Acknowledge in the "
            f"Airflow UI (Required Actions of the {pipeline}_monitor run) or with `ctloop quality ack --pipeline "
            f"{pipeline} --interval {first['start']} --end {first['end']} --by <you> --comment <why>`")


def find(lake: Lake, pipeline: str, start: datetime, end: datetime | None = None) -> dict[str, Any]:
    """The one block of the interval starting at ``start`` (and ending at ``end``, when given).

    Without ``end`` the start must name one block; when it names none, or several, the error lists the
    blocked intervals to choose from.
    """
    known = blocks(lake, pipeline)
    matching = [b for b in known if parse_time(b["start"]) == start and (end is None or parse_time(b["end"]) == end)]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise ValueError(f"{len(matching)} blocked intervals of {pipeline} start at {start.isoformat()}: "
                         f"{_spans(matching)}; say which with --end (or --interval START/END)")
    wanted = f"{start.isoformat()} to {end.isoformat()}" if end is not None else f"starting at {start.isoformat()}"
    waiting = [b for b in known if b["acknowledged"] is None]
    raise ValueError(f"no blocked interval of {pipeline} {wanted} (unacknowledged blocks: "
                     f"{_spans(waiting) or 'none'})")


def _spans(found: list[dict[str, Any]]) -> str:
    return ", ".join(f"{b['start']} to {b['end']}" for b in found)


def acknowledge(lake: Lake, pipeline: str, start: datetime, by: str, comment: str, at: datetime,
                end: datetime | None = None) -> dict[str, Any]:
    """Release the block of the interval starting at ``start`` (and ending at ``end``: ``find``): who, when and
    why, recorded once.

    A second acknowledgement changes nothing and returns the first (``already``: true).
    """
    blocked = find(lake, pipeline, start, end)
    if not by.strip():
        raise ValueError("an acknowledgement needs who gives it (--by)")
    record = {"pipeline": pipeline, "start": blocked["start"], "end": blocked["end"], "by": by,
              "comment": comment, "acknowledged_at": at.isoformat()}
    ack = quality_ack_path(pipeline, parse_time(blocked["start"]), parse_time(blocked["end"]))
    created = lake.create(ack, json.dumps(record, indent=1).encode())
    if not created:
        record = json.loads(lake.read(ack))
    return {**record, "already": not created, "record": lake.url(ack), "block": blocked["record"]}
