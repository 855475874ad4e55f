"""Reads back what the lander wrote, for assertions: every row of a topic, raw and dead-letter."""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
from ctloop.lake.paths import dlq_prefix, raw_prefix
from ctloop.lake.store import Lake
from ctloop.sim.simulator import SimMessage


def read_all(lake: Lake, prefix: str) -> pa.Table | None:
    tables = [pq.read_table(io.BytesIO(lake.read(p))) for p in lake.list(prefix) if p.endswith(".parquet")]
    return pa.concat_tables(tables) if tables else None


def assert_exactly_once(lake: Lake, pipeline: str, expected: list[SimMessage],
                        id_fields: dict[str, str]) -> dict[str, int]:
    """Every valid message's id once in raw/, every bad message once in _dlq/, nothing else."""
    figures: dict[str, int] = {}
    for topic, id_field in id_fields.items():
        want_ids = Counter(m.event_id for m in expected if m.topic == topic and m.kind == "valid")
        raw = read_all(lake, raw_prefix(pipeline, topic))
        got_ids = Counter(raw.column(id_field).to_pylist()) if raw is not None else Counter()
        dupes = {i: n for i, n in got_ids.items() if n > 1}
        assert not dupes, f"{topic}: {len(dupes)} duplicated ids in the lake, e.g. {list(dupes.items())[:3]}"
        missing = set(want_ids) - set(got_ids)
        assert not missing, f"{topic}: {len(missing)} valid events missing from the lake, e.g. {list(missing)[:3]}"
        extra = set(got_ids) - set(want_ids)
        assert not extra, f"{topic}: {len(extra)} ids in the lake that were never produced valid"

        want_bad = Counter(m.value for m in expected if m.topic == topic and m.kind != "valid")
        dlq = read_all(lake, dlq_prefix(pipeline, topic))
        got_bad = Counter(dlq.column("value").to_pylist()) if dlq is not None else Counter()
        positions = Counter(zip(dlq.column("partition").to_pylist(), dlq.column("offset").to_pylist(), strict=True)) \
            if dlq is not None else Counter()
        assert all(n == 1 for n in positions.values()), f"{topic}: a dead letter is stored twice"
        assert got_bad == want_bad, (f"{topic}: dead letters differ: {sum(got_bad.values())} stored, "
                                     f"{sum(want_bad.values())} produced")
        if dlq is not None:
            assert all(dlq.column("error").to_pylist()), "every dead letter carries its error"
        figures[f"{topic}:valid"] = sum(want_ids.values())
        figures[f"{topic}:bad"] = sum(want_bad.values())
    return figures
