"""``ctloop training-set``: a labelled, point-in-time correct, immutable training snapshot.

One row per primary event in [start, end). Features come from Feast's point-in-time join through
the model's feature service, so a row only sees feature values whose time is at or before its own
(and the Spark rows describe the entity *before* the event). Labels follow the maturity rule: a row
is used only once ``labels.maturity_days`` have passed by the label horizon (``as_of``, but never
past the label stream's own watermark: how far chargebacks have landed and been cleaned); it is
positive when a label was reported by then, negative otherwise. Unsettled rows are left out, not
guessed, positive or not.

The snapshot id is a hash of everything that decides its content (spec, interval, as-of, and the
curated partitions it read), so the same inputs give the same id and an existing snapshot is never
rewritten; new late data gives a new id.

Landed data that failed its quality suite under ``monitoring.quality.action: block`` is refused until a
person acknowledges it (``monitoring.blocks``), when the failed stream is one the set reads (``read_streams``):
the command then reports ``refused`` with the reason and builds nothing, and the train DAG stops there with
the reason in its note.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, SpecError, duration_seconds
from ctloop.ingest.manifests import label_watermark, landed_span, source_offsets
from ctloop.lake.hours import DAY, days, parse_time
from ctloop.lake.paths import (
    CLEAN_MARKER_RE,
    clean_marker,
    clean_markers_prefix,
    curated_prefix,
    day_of,
    day_partition,
    features_prefix,
    hour_of,
    snapshot_prefix,
    snapshots_prefix,
)
from ctloop.lake.store import Lake
from ctloop.monitoring.blocks import refusal, unacknowledged


def _curated_table(lake: Lake, spec: PipelineSpec, stream: str, columns: list[str], start: datetime | None,
                   end: datetime) -> Any:
    """Curated rows of ``stream`` with event time in [start, end), read with Arrow and pruned by day partition
    (the Spark jobs' ``read_curated`` prunes the same way)."""
    import pyarrow.dataset as ds

    data = lake.dataset(curated_prefix(spec.name, stream))
    if data is None:
        return None
    t = ds.field(spec.events[stream].time_field)
    cond = (ds.field("event_date") <= f"{end:%Y-%m-%d}") & (t < end)
    if start is not None:
        cond = cond & (ds.field("event_date") >= f"{start:%Y-%m-%d}") & (t >= start)
    return data.to_table(columns=columns, filter=cond)


def read_streams(spec: PipelineSpec) -> dict[str, str]:
    """The event streams a training set reads, each with what for: the primary events, the labels, the feature
    views' sources. A quality block on another stream (the prediction log, say) does not refuse training."""
    roles: dict[str, list[str]] = {spec.primary: ["the primary events"]}
    roles.setdefault(spec.labels.events, []).append("the labels")
    for name, view in (spec.features.views if spec.features else {}).items():
        roles.setdefault(view.source, []).append(f"source of feature view {name}")
    return {stream: ", ".join(what) for stream, what in roles.items()}


def build_training_set(spec: PipelineSpec, settings: Settings, lake: Lake, start: datetime, end: datetime,
                       as_of: datetime | None = None, store: Any = None) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from ctloop.features.store import open_store

    if spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so a training set has no features")
    if as_of is not None and as_of < end:
        raise ValueError(f"--as-of {as_of.isoformat()} must not be before --end {end.isoformat()}")
    watermark = label_watermark(lake, spec)
    # labels as known now (the label stream's watermark), unless the caller fixes a point in time
    as_of = as_of or max(end, watermark or end)
    horizon = min(as_of, watermark) if watermark is not None else None
    reads = read_streams(spec)
    blocking = []
    for b in unacknowledged(lake, spec.name, start, as_of):
        # events and features are read to end, labels to as_of: a block refuses for the streams read in it
        read = {s: lines for s, lines in b["streams"].items()
                if s in reads and (parse_time(b["start"]) < end or s == spec.labels.events)}
        if read:
            blocking.append({**b, "streams": read})
    if blocking:
        reason = refusal(spec.name, start, end, blocking, reads)
        print(f"[training-set] {reason}", file=sys.stderr, flush=True)
        return {"refused": True, "reason": reason, "blocked": [b["record"] for b in blocking], "pipeline": spec.name,
                "start": start.isoformat(), "end": end.isoformat()}
    primary = spec.events[spec.primary]
    label_stream = spec.events[spec.labels.events]
    join = spec.labels.join_key
    target = spec.labels.target
    inputs: dict[str, dict[str, Any]] = {spec.primary: {}}
    for d in days(start, end):
        marker = clean_marker(spec.name, spec.primary, day_partition(d))
        if lake.exists(marker):
            inputs[spec.primary][day_partition(d)] = json.loads(lake.read(marker))
    identity = json.dumps({"spec": spec.spec_hash, "service": spec.feature_service, "start": start.isoformat(),
                           "end": end.isoformat(), "as_of": as_of.isoformat(),
                           "label_horizon": horizon.isoformat() if horizon else None,
                           "inputs": {s: {p: [m["rows"], m["hash"]] for p, m in v.items()} for s, v in inputs.items()},
                           "label_inputs": _label_fingerprint(lake, spec, as_of)}, sort_keys=True)
    snapshot_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    prefix = snapshot_prefix(spec.name, snapshot_id)
    if lake.exists(f"{prefix}/manifest.json"):
        manifest = json.loads(lake.read(f"{prefix}/manifest.json"))
        return {**manifest, "reused": True}

    # every field of the event: the model's request fields and the evaluation slices read them
    columns = list(primary.fields)
    events = _curated_table(lake, spec, spec.primary, columns, start, end)
    if events is None or events.num_rows == 0:
        raise ValueError(f"no curated {spec.primary} events in [{start.isoformat()}, {end.isoformat()}): "
                         f"run `ctloop spark clean` for the interval first")
    entity_df = events.to_pandas().rename(columns={primary.time_field: "event_timestamp"})
    labels = (_curated_table(lake, spec, spec.labels.events, [join, label_stream.time_field], None, horizon)
              if horizon is not None else None)
    reported = (labels.to_pandas().groupby(join)[label_stream.time_field].min()
                if labels is not None and labels.num_rows else pd.Series(dtype="datetime64[us, UTC]"))
    entity_df, immature = label_rows(entity_df, reported.index, join=join, target=target, horizon=horizon,
                                     maturity_days=spec.labels.maturity_days)
    print(f"[training-set] {len(entity_df)} rows ({immature} immature left out); point-in-time join through "
          f"feature service {spec.feature_service}", file=sys.stderr, flush=True)
    unbuilt = [v for v in spec.features.views
               if not any(p.endswith(".parquet") for p in lake.list(features_prefix(spec.name, v) + "/"))]
    if unbuilt:
        where = ", ".join(lake.url(features_prefix(spec.name, v)) for v in unbuilt)
        raise ValueError(f"no feature rows of view(s) {', '.join(unbuilt)} (looked in {where}): "
                         f"run `ctloop spark features` for the interval first")
    store = store or open_store(settings, spec)
    service = store.get_feature_service(spec.feature_service)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    for column in frame.columns:  # the Spark offline store hands times back naive (in its UTC session zone)
        if isinstance(frame[column].dtype, np.dtype) and frame[column].dtype.kind == "M":
            frame[column] = frame[column].dt.tz_localize("UTC")
    sources = {spec.primary: source_offsets(lake, spec, spec.primary, start, end),
               spec.labels.events: source_offsets(lake, spec, spec.labels.events, start - timedelta(days=3650), as_of)}
    manifest = write_snapshot(lake, spec, snapshot_id, frame, start=start, end=end, as_of=as_of, sources=sources,
                              immature_left_out=immature)
    return {**manifest, "reused": False}


def label_rows(entity_df: Any, reported: Any, *, join: str, target: str, horizon: datetime | None,
               maturity_days: int) -> tuple[Any, int]:
    """Keep the rows whose label is settled by ``horizon`` and label them; (rows, how many were left out).

    A row is settled once ``maturity_days`` have passed by the label stream's horizon: a label reported
    by then makes it positive, none makes it negative. Unsettled rows are left out whatever their label:
    keeping the early-reported positives alone would make the most recent days (the holdout) mostly fraud.
    """
    import pandas as pd

    if horizon is None:  # no label has landed and been cleaned yet: nothing is settled
        return entity_df.iloc[0:0].assign(**{target: pd.Series(dtype="int64")}), len(entity_df)
    settled = entity_df["event_timestamp"] + timedelta(days=maturity_days) <= pd.Timestamp(horizon)
    rows = entity_df[settled].copy()
    rows[target] = rows[join].isin(reported).astype("int64")
    return rows, int((~settled).sum())


def write_snapshot(lake: Lake, spec: PipelineSpec, snapshot_id: str, frame: Any, *, start: datetime, end: datetime,
                   as_of: datetime, sources: dict[str, Any], immature_left_out: int = 0) -> dict[str, Any]:
    """Write ``data.parquet`` then ``manifest.json`` (the manifest last: a snapshot without one is incomplete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = spec.labels.target
    frame = frame.sort_values(["event_timestamp", spec.events[spec.primary].id_field]).reset_index(drop=True)
    prefix = snapshot_prefix(spec.name, snapshot_id)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    lake.write(f"{prefix}/data.parquet", sink.getvalue().to_pybytes())
    rows = len(frame)
    feature_names = list(spec.feature_columns)
    manifest = {
        "snapshot_id": snapshot_id, "pipeline": spec.name, "spec_hash": spec.spec_hash,
        "feature_service": spec.feature_service, "features": feature_names, "target": target,
        "start": start.isoformat(), "end": end.isoformat(), "labels_as_of": as_of.isoformat(),
        "maturity_days": spec.labels.maturity_days, "row_count": rows,
        "positives": int(frame[target].sum()),
        "label_rate": round(float(frame[target].mean()), 6) if rows else None,
        "immature_left_out": immature_left_out,
        "missing_feature_values": {f: int(frame[f].isna().sum()) for f in feature_names},
        "sources": sources,
        "data": lake.url(f"{prefix}/data.parquet"),
    }
    lake.write(f"{prefix}/manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


class SnapshotError(ValueError):
    """A training-set snapshot that is missing, incomplete, corrupt or unusable; the message says which."""


def load_snapshot(lake: Lake, spec: PipelineSpec, snapshot_id: str) -> tuple[dict[str, Any], Any]:
    """The snapshot's manifest and rows, checked against each other and against the spec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = snapshot_prefix(spec.name, snapshot_id)
    where = lake.url(prefix)
    if not lake.exists(f"{prefix}/manifest.json"):
        known = sorted({p.split("/")[2] for p in lake.list(f"{snapshots_prefix(spec.name)}/")})
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} not found at {where} (no manifest.json; "
                            f"snapshots of {spec.name}: {', '.join(known[-5:]) or 'none'})")
    try:
        manifest = json.loads(lake.read(f"{prefix}/manifest.json"))
        table = pq.read_table(pa.BufferReader(lake.read(f"{prefix}/data.parquet")))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} at {where} is corrupt: {exc}") from None
    frame = table.to_pandas()
    if len(frame) != manifest.get("row_count"):
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} at {where} is corrupt: data.parquet has "
                            f"{len(frame)} rows, the manifest says {manifest.get('row_count')}")
    if frame.empty:
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} at {where} is empty: nothing to train on")
    needed = ["event_timestamp", spec.labels.target, *spec.feature_columns, *spec.model.request_fields]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} at {where} lacks columns {missing} that "
                            f"pipeline {spec.name!r} needs (built with another spec? its spec hash is "
                            f"{manifest.get('spec_hash')}, the current one {spec.spec_hash})")
    target = frame[spec.labels.target]
    labels = set(target.dropna().unique().tolist())
    if not labels <= {0, 1} or target.isna().any():
        found = sorted(labels)[:5] + (["null"] if target.isna().any() else [])
        raise SnapshotError(f"training-set snapshot {snapshot_id!r} at {where}: {spec.labels.target} must be "
                            f"0 or 1, found {found}")
    return manifest, frame


def latest_window(lake: Lake, spec: PipelineSpec) -> tuple[datetime, datetime, datetime]:
    """``(start, end, as_of)`` of the newest training window whose labels are mature, from the landed data.

    ``as_of`` is where both streams are known: the end of the landed events and the label stream's
    watermark, each robust to a stray future-dated event (``ingest.manifests``); ``end`` is
    ``maturity_days`` earlier so every row has had the time to get its label, and the window is
    ``model.training_window`` long. Decided by the data, never by the wall clock, so a re-run of a DAG
    run builds the same set.
    """
    first, landed = landed_span(lake, spec)
    watermark = label_watermark(lake, spec)
    as_of = min(landed, watermark) if watermark is not None else landed
    end = (as_of - timedelta(days=spec.labels.maturity_days)).replace(hour=0)
    start = max(first, end - timedelta(seconds=duration_seconds(spec.model.training_window)))
    if end - start < timedelta(days=1):
        raise ValueError(f"only {as_of - first} of landed data: a training window needs at least "
                         f"labels.maturity_days ({spec.labels.maturity_days}d) plus one day")
    return start, end, as_of


def _label_fingerprint(lake: Lake, spec: PipelineSpec, as_of: datetime) -> str:
    """Hash of the curated label partitions before ``as_of`` (their markers), so new labels mean a new id."""
    prefix = f"{clean_markers_prefix(spec.name, spec.labels.events)}/"
    digest = hashlib.sha256()
    for path in lake.list(prefix):
        part = path[len(prefix):].removesuffix(".json")
        if not CLEAN_MARKER_RE.fullmatch(path[len(prefix):]) or day_of(part) >= as_of:
            continue
        marker = json.loads(lake.read(path))
        if day_of(part) + DAY <= as_of:
            digest.update(f"{part}:{marker['rows']}:{marker['hash']};".encode())
        else:  # the day of as_of: only its raw files before as_of are read (their names are fixed once landed)
            digest.update(f"{part}:{sorted(f for f in marker['files'] if hour_of(f) < as_of)};".encode())
    return digest.hexdigest()[:16]


def split_by_time(spec: PipelineSpec, frame: Any, end: datetime) -> tuple[Any, Any, Any]:
    """Train / validation / holdout by event time: the holdout is the most recent ``evaluation.holdout_days``
    before ``end``, validation the ``model.validation_days`` before it, training everything earlier. Time,
    not random rows: the model is judged on a period it never saw, as it will be in production."""
    import pandas as pd

    holdout_start = pd.Timestamp(end) - pd.Timedelta(seconds=duration_seconds(spec.evaluation.holdout_days))
    val_start = holdout_start - pd.Timedelta(seconds=duration_seconds(spec.model.validation_days))
    t = frame["event_timestamp"]
    parts = (frame[t < val_start], frame[(t >= val_start) & (t < holdout_start)], frame[t >= holdout_start])
    target = spec.labels.target
    for name, part in zip(("training", "validation", "holdout"), parts, strict=True):
        if part.empty or part[target].sum() == 0:
            raise SnapshotError(
                f"the snapshot's {name} split has {len(part)} rows and {int(part[target].sum())} positives: "
                f"it needs both (holdout = last {spec.evaluation.holdout_days} before {end.isoformat()}, "
                f"validation = the {spec.model.validation_days} before it); build a longer snapshot or shorten them")
    return tuple(part.reset_index(drop=True) for part in parts)  # type: ignore[return-value]
