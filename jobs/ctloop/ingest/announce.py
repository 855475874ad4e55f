"""Telling Airflow what landed, whoever landed it.

The lander's manifests (one per landed batch, ``ctloop.ingest.manifests``) are the record of what
landed, whether the ingest DAG's own lander wrote them (``CTLOOP_LANDING=dag``) or a long-running one
did (``service``: the ``ctloop-lander`` Deployment). ``announce`` reads the manifests past a cursor kept
in the lake (per topic and partition, the first offset of the last batch announced) and sums them up in
the shape of a landing's summary (``landed``, ``dead_letters``, ``files``, ``interval``), which the
ingest DAG turns into an event on ``ctloop://<pipeline>/raw``.

The cursor moves in a second step, ``mark_announced``, once that event is out: a run that fails or is
retried before then announces the same batches again. At least once, then; the features DAG rewrites
the same partitions for the same interval, so twice costs time, never data. When the new batches carry
no raw rows (dead letters only) there is no event to wait for, and ``announce`` moves the cursor itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ctloop.config.spec import PipelineSpec
from ctloop.ingest.manifests import batches_after, hours_interval
from ctloop.lake.paths import announce_cursor_path
from ctloop.lake.store import Lake


def read_cursor(lake: Lake, spec: PipelineSpec) -> dict[str, int]:
    """``"topic:partition"`` → first offset of the last batch announced (empty: nothing announced yet)."""
    path = announce_cursor_path(spec.name)
    if not lake.exists(path):
        return {}
    return {key: int(offset) for key, offset in json.loads(lake.read(path))["cursor"].items()}


def _write_cursor(lake: Lake, spec: PipelineSpec, cursor: dict[str, int]) -> None:
    record = {"pipeline": spec.name, "cursor": dict(sorted(cursor.items())),
              "updated_at": datetime.now(UTC).isoformat()}
    lake.write(announce_cursor_path(spec.name), json.dumps(record, indent=1).encode())


def announce(lake: Lake, spec: PipelineSpec) -> dict[str, Any]:
    """What landed since the cursor, as a landing summary plus the ``cursor`` to confirm with ``mark_announced``."""
    previous = read_cursor(lake, spec)
    batches = batches_after(lake, spec, previous)
    cursor = dict(previous)
    for manifest in batches:
        key = f"{manifest['topic']}:{manifest['partition']}"
        cursor[key] = max(cursor.get(key, -1), manifest["first_offset"])
    landed = sum(m["rows"] for m in batches)
    moved = bool(batches) and not landed  # dead letters only: no raw asset event will follow, so nothing to wait for
    if moved:
        _write_cursor(lake, spec, cursor)
    return {
        "pipeline": spec.name, "mode": "announce", "lake": lake.uri,
        "landed": landed, "dead_letters": sum(m["dead_letters"] for m in batches),
        "files": sum(len(m["files"]) for m in batches), "manifests": len(batches),
        "partitions": sorted({f"{m['topic']}:{m['partition']}" for m in batches}),
        "interval": hours_interval({p for m in batches for p in m.get("partitions_touched", [])}),
        "previous_cursor": previous, "cursor": cursor, "cursor_moved": moved,
    }


def mark_announced(lake: Lake, spec: PipelineSpec, cursor: dict[str, Any]) -> dict[str, Any]:
    """Move the cursor to ``cursor`` (an ``announce`` result's), never back: a late or repeated call is harmless."""
    topics = {e.topic for e in spec.events.values()}
    wanted: dict[str, int] = {}
    for key, offset in cursor.items():
        topic, _, partition = str(key).rpartition(":")
        if topic not in topics or not partition.isdigit() or not isinstance(offset, int) or isinstance(offset, bool):
            raise ValueError(f"--announced: expected {{\"<topic>:<partition>\": <first offset>, ...}} for the topics "
                             f"of pipeline {spec.name!r}, got {key!r}: {offset!r}")
        wanted[key] = offset
    stored = read_cursor(lake, spec)
    merged = {**stored, **{k: max(v, stored.get(k, -1)) for k, v in wanted.items()}}
    moved = sorted(k for k in merged if merged[k] != stored.get(k))
    if moved:
        _write_cursor(lake, spec, merged)
    return {"pipeline": spec.name, "mode": "announced", "lake": lake.uri, "cursor": merged, "moved": moved}
