"""What landed: the lander's manifests read back, for lineage (offsets behind a snapshot) and windows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ctloop.config.spec import PipelineSpec
from ctloop.lake.hours import HOUR
from ctloop.lake.paths import hour_of, manifest_prefix
from ctloop.lake.store import Lake


def source_offsets(lake: Lake, spec: PipelineSpec, stream: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Kafka offsets and lake partitions behind [start, end) of a stream, from the lander's manifests."""
    topic = spec.events[stream].topic
    parts: set[str] = set()
    offsets: dict[str, list[int]] = {}
    for path in lake.list(f"{manifest_prefix(spec.name)}/{topic}/"):
        manifest = json.loads(lake.read(path))
        for f in manifest.get("files", []):
            if f.get("kind") != "raw" or not (start <= hour_of(f["lake_partition"]) < end):
                continue
            parts.add(f["lake_partition"])
            span = offsets.setdefault(str(manifest["partition"]), [f["first_offset"], f["last_offset"]])
            span[0], span[1] = min(span[0], f["first_offset"]), max(span[1], f["last_offset"])
    return {"topic": topic, "partitions": sorted(parts),
            "offsets": {p: {"first": v[0], "last": v[1]}
                        for p, v in sorted(offsets.items(), key=lambda kv: int(kv[0]))}}


def landed_span(lake: Lake, spec: PipelineSpec) -> tuple[datetime, datetime]:
    """Whole hours covering every landed primary event, from the lander's manifests."""
    parts = set()
    for path in lake.list(f"{manifest_prefix(spec.name)}/{spec.events[spec.primary].topic}/"):
        parts.update(json.loads(lake.read(path)).get("partitions_touched", []))
    if not parts:
        raise ValueError(f"no landed {spec.primary} events in {lake.uri}: run `ctloop ingest` first")
    first, last = min(map(hour_of, parts)), max(map(hour_of, parts))
    return first, last + HOUR
