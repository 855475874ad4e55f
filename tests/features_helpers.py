"""Raw lake data for the feature tests, written straight in the lander's layout (no broker needed).

Faster than produce + land and byte-for-byte the same layout: ``raw/<pipeline>/<topic>/event_date=/
event_hour=/<topic>+<partition>+<offset>.parquet`` with the ``_kafka_*`` columns, plus a manifest per file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from ctloop.config.spec import PipelineSpec
from ctloop.ingest.events import EventCodec
from ctloop.lake.paths import hour_partition, manifest_prefix, raw_prefix
from ctloop.lake.store import Lake, LocalLake
from ctloop.sim.simulator import load_simulator

HOUR_US = 3_600_000_000


def write_table(lake: Lake, spec: PipelineSpec, stream: str, table: pa.Table, partition: int,
                first_offset: int) -> list[str]:
    """Write ``table`` (spec columns) as the lander would: one file per event hour, with a manifest."""
    event = spec.events[stream]
    n = table.num_rows
    offsets = pa.array(range(first_offset, first_offset + n), pa.int64())
    times = table[event.time_field]
    table = table.append_column("_kafka_partition", pa.array([partition] * n, pa.int32()))
    table = table.append_column("_kafka_offset", offsets)
    table = table.append_column("_kafka_timestamp", pc.cast(times, pa.timestamp("ms", tz="UTC"), safe=False))
    hours = pc.divide(times.cast(pa.int64()), HOUR_US)
    written, files = [], []
    for hour in sorted(pc.unique(hours).to_pylist()):
        part = table.filter(pc.equal(hours, hour))
        at = datetime.fromtimestamp(hour * 3600, tz=UTC)
        lake_partition = hour_partition(at)
        first = part["_kafka_offset"][0].as_py()
        path = f"{raw_prefix(spec.name, event.topic)}/{lake_partition}/{event.topic}+{partition}+{first:020d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink)
        lake.write(path, sink.getvalue().to_pybytes())
        written.append(path)
        files.append({"kind": "raw", "path": path, "rows": part.num_rows, "lake_partition": lake_partition,
                      "first_offset": first, "last_offset": part["_kafka_offset"][-1].as_py(),
                      "min_event_time": pc.min(part[event.time_field]).as_py().isoformat(),
                      "max_event_time": pc.max(part[event.time_field]).as_py().isoformat(),
                      "max_kafka_time": pc.max(part["_kafka_timestamp"]).as_py().isoformat()})
    manifest = {"pipeline": spec.name, "topic": event.topic, "partition": partition, "first_offset": first_offset,
                "last_offset": first_offset + n - 1, "files": files,
                "partitions_touched": sorted({f["lake_partition"] for f in files})}
    lake.write(f"{manifest_prefix(spec.name)}/{event.topic}/{event.topic}+{partition}+{first_offset:020d}.json",
               json.dumps(manifest).encode())
    return written


def simulate_tables(spec: PipelineSpec, events: int, seed: int = 1) -> dict[str, pa.Table]:
    """Valid simulated events per stream as Arrow tables with the spec's schema."""
    values: dict[str, list[bytes]] = defaultdict(list)
    for msg in load_simulator(spec, seed).messages(events):
        values[msg.stream].append(msg.value)
    return {stream: EventCodec(spec.events[stream]).to_table(values[stream]) for stream in spec.events}


def write_simulated_lake(lake: Lake, spec: PipelineSpec, events: int, seed: int = 1,
                         partitions: int = 2, segment: int | None = None) -> dict[str, Any]:
    """Simulate ``events`` transactions (and their chargebacks) into the raw lake; returns the tables.

    Each Kafka partition lands as one batch, or as batches of ``segment`` records (the lander closes a
    segment by size or time, so a real lake has many: each writes its own file per partition of the lake).
    """
    tables = simulate_tables(spec, events, seed)
    for stream, table in tables.items():
        step = -(-table.num_rows // partitions) if table.num_rows else 0
        for p in range(partitions):
            chunk = table.slice(p * step, step)
            size = segment or max(chunk.num_rows, 1)
            for first in range(0, chunk.num_rows, size):
                write_table(lake, spec, stream, chunk.slice(first, size), p, first)
    return tables


def read_dataset(lake: LocalLake, prefix: str) -> pd.DataFrame:
    """A hive-partitioned folder of the lake (curated, features, ...) as one frame."""
    data = ds.dataset(str(lake.root / prefix), format="parquet", partitioning="hive", ignore_prefixes=["_", "."])
    return data.to_table().to_pandas()
