"""Data quality of a landed interval: one Great Expectations suite per event stream, derived from the spec.

What the lander wrote to ``raw/`` for the interval's event hours is judged before anything cleans it,
so a producer's bug shows up where it entered. Each field of the stream's schema gives its
expectations (present, of its type, not null when required, within min/max, one of ``allowed``, no
longer than ``max_length``); the event id is unique within the interval; the newest event is within
``monitoring.quality.freshness`` of the interval's end; and the row count is within
``volume_tolerance`` of the median of the previous ``volume_history`` intervals (per hour, plus three
standard deviations of counting noise so a sparse stream does not alarm by chance). A small record
of each interval's volume is kept in the lake for that norm.

A failed suite is a ``quality_<stream>`` check whose evidence carries the spec's ``action``: ``retrain``
(the monitor DAG requests a retrain), ``alert`` (reported, no retrain) or ``block`` (the interval is
blocked for training until a person acknowledges it: ``monitoring.blocks``). The Data Docs of the
interval are rendered into the lake and linked from every check.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, duration_seconds
from ctloop.lake.hours import HOUR
from ctloop.lake.paths import (
    hour_of,
    quality_docs_prefix,
    quality_volume_before,
    quality_volume_prefix,
    quality_volume_record,
    raw_prefix,
)
from ctloop.lake.store import Lake
from ctloop.monitoring.blocks import block
from ctloop.monitoring.checks import Check
from ctloop.training.data_gate import Suites, describe, failures

# The dtypes Great Expectations accepts for each spec type, as ``landed_frame`` reads the columns: its pandas
# type check matches numpy and pandas dtype names (strings value by value), and knows no zone-aware dtype.
TYPE_NAMES: dict[str, list[str]] = {"string": ["str"], "int": ["int64", "Int64Dtype"], "double": ["float64"],
                                    "bool": ["bool", "BooleanDtype"],
                                    "timestamp": ["datetime64[us]", "datetime64[ns]", "datetime64[ms]"]}
NOISE_SIGMAS = 3  # counting noise allowed around the volume norm, in Poisson standard deviations
DOCS_FILES = (".html", "favicon.ico")  # the pages load styles and scripts from CDNs; GX's 4 MB of bundled
                                       # images and fonts are not referenced by them, so they stay out of the lake


def expectations(spec: PipelineSpec, stream: str, columns: list[str], *, end: datetime | None = None,
                 volume_bounds: tuple[int, int] | None = None) -> list[Any]:
    """The stream's suite: schema, nulls, ranges, allowed values, lengths, id uniqueness, freshness, volume.

    ``columns`` are those present: a missing field gets only its (failing) existence expectation.
    Freshness needs the interval's ``end``, volume a norm; without them they are left out.
    """
    import great_expectations as gx

    e = gx.expectations
    event = spec.events[stream]
    quality = spec.monitoring.quality
    suite: list[Any] = []
    if volume_bounds is not None:
        suite.append(e.ExpectTableRowCountToBeBetween(min_value=volume_bounds[0], max_value=volume_bounds[1]))
    for name, field in event.fields.items():
        suite.append(e.ExpectColumnToExist(column=name))
        if name not in columns:
            continue
        suite.append(e.ExpectColumnValuesToBeInTypeList(column=name, type_list=TYPE_NAMES[field.type]))
        if field.required:
            mostly = round(1 - quality.max_null_fraction, 6)
            suite.append(e.ExpectColumnValuesToNotBeNull(column=name, **({"mostly": mostly} if mostly < 1 else {})))
        if field.allowed is not None:
            suite.append(e.ExpectColumnValuesToBeInSet(column=name, value_set=list(field.allowed)))
        if field.min is not None or field.max is not None:
            suite.append(e.ExpectColumnValuesToBeBetween(column=name, min_value=field.min, max_value=field.max))
        if field.max_length is not None:
            suite.append(e.ExpectColumnValueLengthsToBeBetween(column=name, max_value=field.max_length))
    if event.id_field in columns:
        suite.append(e.ExpectColumnValuesToBeUnique(column=event.id_field))
    if end is not None and event.time_field in columns:
        oldest = end - timedelta(seconds=duration_seconds(quality.freshness))
        suite.append(e.ExpectColumnMaxToBeBetween(column=event.time_field,
                                                  min_value=oldest.astimezone(UTC).replace(tzinfo=None).isoformat()))
    return suite


def landed_frame(spec: PipelineSpec, lake: Lake, stream: str, start: datetime, end: datetime) -> tuple[Any, str | None]:
    """The raw rows the lander wrote for the event hours in [start, end), as pandas with the spec's columns
    that are present (integers stay integers with nulls); (None, why) when the files cannot be read as one table
    (their types disagree)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    event = spec.events[stream]
    data = lake.dataset(raw_prefix(spec.name, event.topic))
    days = (ds.field("event_date") >= f"{start:%Y-%m-%d}") & (ds.field("event_date") <= f"{end:%Y-%m-%d}")
    fragments = [] if data is None else [f for f in data.get_fragments(filter=days)
                                         if start <= hour_of(f.path) < end]
    empty = pd.DataFrame({name: pd.Series(dtype="object") for name in event.fields})
    if not fragments:
        return empty, None
    try:
        schema = pa.unify_schemas([f.physical_schema for f in fragments], promote_options="permissive")
        fs, _ = lake.arrow_fs()
        table = ds.dataset([f.path for f in fragments], schema=schema, filesystem=fs, format="parquet").to_table(
            columns=[name for name in event.fields if name in schema.names])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        return None, f"the landed files of {stream} do not share one schema: {exc}"
    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}  # ints with nulls stay ints
    return table.to_pandas(types_mapper=nullable.get), None


def volume_norm(spec: PipelineSpec, lake: Lake, stream: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The row-count range expected for [start, end) from the volume records of the intervals starting before it."""
    quality = spec.monitoring.quality
    before = quality_volume_before(spec.name, stream, start)  # records are named by start: they list in time order
    earlier = [p for p in lake.list(f"{quality_volume_prefix(spec.name, stream)}/") if p < before]
    history = [json.loads(lake.read(p)) for p in earlier[-quality.volume_history:]]
    if not history:
        return {"history": 0, "note": "no earlier interval recorded yet: volume not judged"}
    per_hour = statistics.median(r["rows"] / r["hours"] for r in history)
    expected = per_hour * ((end - start) / HOUR)
    noise = NOISE_SIGMAS * expected ** 0.5
    low = max(0, int(expected * (1 - quality.volume_tolerance) - noise))
    high = int(expected * (1 + quality.volume_tolerance) + noise) + 1
    return {"history": len(history), "expected": round(expected, 1), "bounds": [low, high],
            "from": history[0]["start"], "to": history[-1]["end"]}


def validate_frame(spec: PipelineSpec, stream: str, frame: Any, *, end: datetime | None = None,
                   volume_bounds: tuple[int, int] | None = None, suites: Suites | None = None,
                   run_name: str = "landed") -> tuple[bool, dict[str, Any]]:
    """Run the stream's suite on ``frame`` (the landed rows, as ``landed_frame`` reads them): (passed, evidence).

    What ``make bench-monitor`` times as ``gx_seconds``. Zone-aware times are judged as naive UTC (the type
    check knows no zone-aware dtype).
    """
    import pandas as pd

    zoned = [name for name in frame.columns if isinstance(frame[name].dtype, pd.DatetimeTZDtype)]
    if zoned:
        frame = frame.assign(**{name: frame[name].dt.tz_convert(None) for name in zoned})
    suite = expectations(spec, stream, list(frame.columns), end=end, volume_bounds=volume_bounds)
    suites = suites or Suites(f"{spec.name}_landed")
    result = suites.validate(stream, f"{spec.name}_{stream}_landed", suite, frame, run_name)
    failed = json.loads(json.dumps(failures(result), default=str))  # Timestamps and numpy values, as JSON
    return bool(result.success), {"rows": len(frame), "expectations": len(result.results), "failed": failed}


def checks(spec: PipelineSpec, settings: Settings, lake: Lake, start: datetime, end: datetime, *,
           now: datetime | None = None) -> list[Check]:
    """One ``quality_<stream>`` check per event stream of the pipeline for the landed interval [start, end).

    Renders the interval's Data Docs into the lake, records each stream's volume, and under
    ``action: block`` blocks the interval for training when any stream failed. ``settings`` is unused: the
    lake holds everything read here (the signature is the one every monitor check shares).
    """
    action = spec.monitoring.quality.action
    suites = Suites(f"{spec.name}_landed")
    judged: dict[str, dict[str, Any]] = {}
    for stream in spec.events:
        frame, unreadable = landed_frame(spec, lake, stream, start, end)
        norm = volume_norm(spec, lake, stream, start, end)
        if frame is None:
            judged[stream] = {"passed": False, "rows": None, "expectations": 0, "volume": norm,
                              "failed": [{"expectation": "schema", "column": None, "kwargs": {},
                                          "observed": {"error": unreadable}}]}
            continue
        bounds = tuple(norm["bounds"]) if "bounds" in norm else None
        if frame.empty and (bounds is None or bounds[0] == 0):
            passed, evidence = True, {"rows": 0, "expectations": 0, "failed": []}  # nothing landed, none expected
        else:
            passed, evidence = validate_frame(spec, stream, frame, end=None if frame.empty else end,
                                              volume_bounds=bounds, suites=suites,
                                              run_name=f"{stream}_{start:%Y%m%dT%H}-{end:%Y%m%dT%H}")
        lake.write(quality_volume_record(spec.name, stream, start, end), json.dumps(
            {"stream": stream, "start": start.isoformat(), "end": end.isoformat(), "rows": len(frame),
             "hours": (end - start) / HOUR}).encode())
        judged[stream] = {"passed": passed, **evidence, "volume": norm}
    docs = _publish_docs(spec, lake, suites, start, end) if any(j["expectations"] for j in judged.values()) else None
    failed = {s: [describe(f) for f in j["failed"]] for s, j in judged.items() if not j["passed"]}
    blocked = block(lake, spec.name, start, end, failed, docs, now or datetime.now(UTC)) \
        if failed and action == "block" else None
    out = []
    for stream, j in judged.items():
        evidence = {"stream": stream, "interval": [start.isoformat(), end.isoformat()], "action": action, **j,
                    "data_docs": docs}
        del evidence["passed"]
        if blocked is not None and stream in failed:
            evidence["blocked"] = blocked["record"]
        out.append(Check(f"quality_{stream}", j["passed"], _detail(stream, j, action), evidence))
        print(f"[quality] {stream} [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}): {out[-1].detail}", file=sys.stderr,
              flush=True)
    return out


def _detail(stream: str, judged: dict[str, Any], action: str) -> str:
    volume = judged["volume"]
    norm = (f"volume norm {volume['bounds'][0]}-{volume['bounds'][1]} rows from {volume['history']} earlier "
            "intervals" if volume["history"] else "volume not judged (no earlier interval recorded)")
    rows = "unreadable" if judged["rows"] is None else f"{judged['rows']:,} events"
    if judged["passed"]:
        met = f"all {judged['expectations']} expectations met" if judged["expectations"] else "nothing to judge"
        return f"{stream}: {rows}, {met}; {norm}"
    then = {"retrain": "a retrain is requested", "alert": "alert only, no retrain",
            "block": "training on this interval is blocked until a person acknowledges it"}[action]
    lines = "; ".join(describe(f) for f in judged["failed"])
    return (f"{stream}: {rows}, {len(judged['failed'])} of {judged['expectations'] or 1} expectations failed: "
            f"{lines} ({norm}); action {action}: {then}")


def _publish_docs(spec: PipelineSpec, lake: Lake, suites: Suites, start: datetime, end: datetime) -> str:
    """Render the interval's Data Docs and put them in the lake, replacing an earlier run's: index.html's URL."""
    prefix = quality_docs_prefix(spec.name, start, end)
    for old in lake.list(f"{prefix}/"):
        lake.delete(old)
    with tempfile.TemporaryDirectory(prefix="ctloop-docs-") as tmp:
        site = Path(tmp)
        suites.data_docs(site)
        for path in sorted(site.rglob("*")):
            if path.is_file() and path.name.endswith(DOCS_FILES):
                lake.write(f"{prefix}/{path.relative_to(site).as_posix()}", path.read_bytes())
    return lake.url(f"{prefix}/index.html")
