"""Landed data for the data-quality tests: a simulated day in the lander's layout, and bad events written
into one hour of it (tests/integration/test_quality_monitor.py, tests/dags/test_quality_approval.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ctloop.config.spec import PipelineSpec, load_spec
from ctloop.lake.store import Lake, open_lake

from tests.conftest import make_pipeline, settings_for
from tests.features_helpers import simulate_tables, write_table

START = datetime(2026, 1, 1, tzinfo=UTC)  # the simulator's start (pipelines/fraud.yaml)
H = timedelta(hours=1)
BAD_HOUR = START + 4 * H


def landed_lake(tmp_path: Path, events: int = 2000, settings: dict[str, Any] | None = None,
                **overrides: Any) -> tuple[PipelineSpec, Lake, Any]:
    """``events`` transactions (and their chargebacks) over a day (``simulator.params.days``), landed as the
    lander writes them: ~80 an hour by default. ``settings`` adds CTLOOP settings (an S3 lake, say)."""
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 1, **overrides})
    # no broker: the data is written straight in
    settings = settings_for(tmp_path, "127.0.0.1:9", pipelines, **(settings or {}))
    spec, lake = load_spec("fraud", pipelines), open_lake(settings)
    for stream, table in simulate_tables(spec, events, seed=3).items():
        if table.num_rows:
            write_table(lake, spec, stream, table, 0, 0)
    return spec, lake, settings


def write_bad_events(spec: PipelineSpec, lake: Lake, events: int = 2000, hour: datetime = BAD_HOUR) -> None:
    """Four events in ``hour`` (the bad hour) of ``landed_lake``'s data, as a broken producer (or a tool bypassing
    the lander) would land them: a negative amount, a null id, an unknown currency, and an id already there."""
    table = simulate_tables(spec, events, seed=3)[spec.primary]
    times = table["event_time"]
    landed = table.filter(pc.and_(pc.greater_equal(times, pa.scalar(hour)), pc.less(times, pa.scalar(hour + H))))
    rows = landed.slice(0, 4).to_pylist()
    rows[0] |= {"amount": -5.0, "transaction_id": f"bad-amount-{hour:%H}"}
    rows[1] |= {"transaction_id": None}
    rows[2] |= {"currency": "XXX", "transaction_id": f"bad-currency-{hour:%H}"}
    rows[3] |= {"transaction_id": landed["transaction_id"][5].as_py()}
    schema = pa.schema([f.with_nullable(True) for f in landed.schema])
    write_table(lake, spec, spec.primary, pa.Table.from_pylist(rows, schema=schema), 3, 1_000_000)
