"""``ctloop materialize``: offline feature rows → Feast online store, for a data interval.

Feast's own ``materialize_incremental`` keeps its watermark in the registry, where a ``feast apply``
can reset it, and pulls the whole range at once, which runs out of memory on long ranges. Here:

- the watermark lives in the lake (``_state/feast/<project>/<pipeline>/<view>.json``), outside Feast;
- the range runs in chunks of ``features.materialize_chunk`` (each one bounded in memory), and the
  watermark advances after every chunk, so a killed run resumes where it stopped;
- each run starts ``features.materialize_overlap`` before the watermark, picking up late rows, and
  always runs through the watermark, so the online store ends at the latest values even when an old
  interval is re-run (idempotent: same interval, same online state).
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, SpecError, duration_seconds
from ctloop.lake.paths import features_prefix, watermark_path
from ctloop.lake.store import Lake


def read_watermark(lake: Lake, settings: Settings, pipeline: str, view: str) -> datetime | None:
    path = watermark_path(settings.feast_project, pipeline, view)
    return datetime.fromisoformat(json.loads(lake.read(path))["watermark"]) if lake.exists(path) else None


def _offline_rows(lake: Lake, pipeline: str, view: str, start: datetime, end: datetime) -> int:
    """Rows of the view's offline data in [start, end): the work one chunk hands to Feast."""
    import pyarrow.dataset as ds

    data = lake.dataset(features_prefix(pipeline, view))
    if data is None:
        return 0
    t = ds.field("event_timestamp")
    return data.count_rows(filter=(t >= start) & (t < end))


def materialize(spec: PipelineSpec, settings: Settings, lake: Lake, start: datetime, end: datetime,
                store: Any = None) -> dict[str, Any]:
    """Materialize every view of the spec for [start, end) (plus overlap), chunk by chunk."""
    import time

    from ctloop.features.store import open_store

    if spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so there is nothing to materialize")
    store = store or open_store(settings, spec)
    chunk = timedelta(seconds=duration_seconds(spec.features.materialize_chunk))
    overlap = timedelta(seconds=duration_seconds(spec.features.materialize_overlap))
    views: dict[str, Any] = {}
    started = time.monotonic()
    for view in spec.features.views:
        mark = read_watermark(lake, settings, spec.name, view)
        frm = start if mark is None else min(start, mark - overlap)
        until = end if mark is None else max(end, mark)
        rows, chunks, at = 0, 0, frm
        while at < until:
            stop = min(at + chunk, until)
            n = _offline_rows(lake, spec.name, view, at, stop)
            if n:
                with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; stdout is for the summary
                    store.materialize(at, stop, feature_views=[view])
            rows += n
            chunks += 1
            mark = max(mark, stop) if mark else stop
            state = {"watermark": mark.isoformat(), "last_chunk": [at.isoformat(), stop.isoformat()]}
            lake.write(watermark_path(settings.feast_project, spec.name, view), json.dumps(state).encode())
            print(f"[materialize] {spec.name}.{view} [{at:%Y-%m-%dT%H}, {stop:%Y-%m-%dT%H}): {n} rows",
                  file=sys.stderr, flush=True)
            at = stop
        views[view] = {"from": frm, "to": until, "chunks": chunks, "rows": rows, "watermark": mark}
    seconds = time.monotonic() - started
    total = sum(v["rows"] for v in views.values())
    return {"job": "materialize", "pipeline": spec.name, "project": settings.feast_project,
            "online_store": settings.feast_online_store, "start": start, "end": end, "views": views,
            "rows": total, "seconds": round(seconds, 2), "rows_per_s": round(total / seconds, 1) if seconds else None}
