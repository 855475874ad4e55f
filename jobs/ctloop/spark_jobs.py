"""Spark jobs ``ctloop spark clean`` and ``ctloop spark features``: raw lake → curated → features.

Both take a pipeline and a half-open data interval [start, end) on whole hours, read and write only
the lake, and are idempotent: a re-run deletes the hour partitions it owns before writing them again,
so the same interval always leaves the same rows (``checksum`` in the summary proves it).

Late data: ``clean`` compares each hour partition of the look-back window (``features.lateness``)
with the raw files it was last built from (a marker under ``_state/clean/``) and rebuilds the ones
late events have touched; ``features`` compares the curated markers with those it last read and
recomputes from the earliest changed hour, because a late event changes every trailing window after it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ctloop.ingest import manifest_prefix, raw_prefix
from ctloop.lake import Lake
from ctloop.settings import Settings
from ctloop.spec import EventSpec, FeatureViewSpec, PipelineSpec, SpecError, duration_seconds

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

HOUR = timedelta(hours=1)
_PART_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})/event_hour=(\d{2})")
SPARK_TYPES = {"string": "string", "int": "bigint", "double": "double", "bool": "boolean", "timestamp": "timestamp"}


# -- paths: the only place that knows where curated data, features and job state live ----------------
def curated_prefix(pipeline: str, stream: str) -> str:
    return f"curated/{pipeline}/{stream}"


def quarantine_prefix(pipeline: str, stream: str) -> str:
    return f"quarantine/{pipeline}/{stream}"


def features_prefix(pipeline: str, view: str) -> str:
    return f"features/{pipeline}/{view}"


def _clean_marker(pipeline: str, stream: str, part: str) -> str:
    return f"_state/clean/{pipeline}/{stream}/{part}.json"


def _features_state(pipeline: str, view: str) -> str:
    return f"_state/features/{pipeline}/{view}.json"


def partition_of(hour: datetime) -> str:
    return f"event_date={hour:%Y-%m-%d}/event_hour={hour:%H}"


def hour_of(part: str) -> datetime:
    match = _PART_RE.search(part)
    if match is None:
        raise ValueError(f"not a lake partition: {part!r}")
    return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def hours(start: datetime, end: datetime) -> list[datetime]:
    out, at = [], start
    while at < end:
        out.append(at)
        at += HOUR
    return out


def parse_interval(start: str, end: str) -> tuple[datetime, datetime]:
    """Parse ``--start/--end`` (ISO dates or datetimes, UTC when no zone) into whole UTC hours."""
    parsed = []
    for flag, value in (("--start", start), ("--end", end)):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{flag}: expected an ISO date or datetime like 2026-01-03 or 2026-01-03T14:00Z, "
                             f"got {value!r}") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if moment.minute or moment.second or moment.microsecond:
            raise ValueError(f"{flag}: the jobs work on whole hours, got {value!r}")
        parsed.append(moment)
    if parsed[0] >= parsed[1]:
        raise ValueError(f"--start {start!r} must be before --end {end!r}")
    return parsed[0], parsed[1]


def spark_uri(lake: Lake, path: str) -> str:
    """Spark reads S3 through the s3a connector (the job image adds hadoop-aws)."""
    url = lake.url(path)
    return "s3a://" + url.removeprefix("s3://") if url.startswith("s3://") else url


def _log(message: str) -> None:
    print(f"[spark] {message}", file=sys.stderr, flush=True)


# -- the session -----------------------------------------------------------------------------------
def spark_session(settings: Settings, app: str = "ctloop") -> SparkSession:
    """The active session if there is one (tests share one), else a new one on ``settings.spark_master``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (SparkSession.builder.appName(app).master(settings.spark_master)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.memory", "4g"))
    if settings.s3_endpoint_url:
        builder = builder.config("spark.hadoop.fs.s3a.endpoint", settings.s3_endpoint_url) \
            .config("spark.hadoop.fs.s3a.path.style.access", "true")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def configure_session(spark: SparkSession) -> None:
    """Settings the jobs rely on, applied to a session someone else built."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")


# -- helpers -----------------------------------------------------------------------------------------
def _read_json(lake: Lake, path: str) -> Any:
    return json.loads(lake.read(path)) if lake.exists(path) else None


def _write_json(lake: Lake, path: str, data: Any) -> None:
    lake.write(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode())


def _clear(lake: Lake, prefix: str, parts: Iterable[str]) -> None:
    for part in parts:
        for path in lake.list(f"{prefix}/{part}/"):
            lake.delete(path)


def checksum(df: DataFrame) -> dict[str, Any]:
    """Order-independent content checksum: row count and the sum of every row's 64-bit hash."""
    from pyspark.sql import functions as F

    row = df.select(F.count(F.lit(1)).alias("rows"),
                    F.sum(F.xxhash64(*[F.col(c) for c in sorted(df.columns)]).cast("decimal(38,0)")).alias("h")).first()
    return {"rows": int(row["rows"]), "hash": str(row["h"] or 0)}


def _partition_cols(time_col: Column) -> list[Column]:
    from pyspark.sql import functions as F

    return [F.date_format(time_col, "yyyy-MM-dd").alias("event_date"),
            F.date_format(time_col, "HH").alias("event_hour")]


def _write_parts(df: DataFrame, lake: Lake, prefix: str, parts: list[str]) -> None:
    """Replace exactly ``parts`` under ``prefix``: delete them, then write the rows Spark produced."""
    _clear(lake, prefix, parts)
    if parts:
        (df.repartition("event_date", "event_hour").sortWithinPartitions(*df.columns[:1])
         .write.mode("append").partitionBy("event_date", "event_hour").parquet(spark_uri(lake, prefix)))


# -- clean -------------------------------------------------------------------------------------------
def _violations(event: EventSpec, raw_cols: set[str]) -> tuple[list[Column], Column]:
    """Typed columns and one reason expression (null when the row is fine) naming every failed field."""
    from pyspark.sql import functions as F

    typed, reasons = [], []
    for name, field in event.fields.items():
        spark_type = SPARK_TYPES[field.type]
        source = F.col(f"`{name}`") if name in raw_cols else F.lit(None)
        value = source.cast(spark_type)
        typed.append(value.alias(name))
        if name not in raw_cols:
            if field.required:
                reasons.append(F.lit(f"{name}: column missing"))
            continue
        reasons.append(F.when(source.isNotNull() & value.isNull(), F.lit(f"{name}: not a valid {field.type}")))
        if field.required:
            reasons.append(F.when(source.isNull(), F.lit(f"{name}: required but null")))
        if field.allowed is not None:
            reasons.append(F.when(value.isNotNull() & ~value.isin(field.allowed), F.concat(
                F.lit(f"{name}: not one of the allowed values, got '"), value, F.lit("'"))))
        if field.max_length is not None:
            reasons.append(F.when(F.length(value) > field.max_length, F.lit(f"{name}: longer than {field.max_length}")))
        if field.min is not None:
            reasons.append(F.when(value < field.min, F.lit(f"{name}: below min {field.min}")))
        if field.max is not None:
            reasons.append(F.when(value > field.max, F.lit(f"{name}: above max {field.max}")))
    reason = F.concat_ws("; ", F.array_compact(F.array(*reasons)))
    return typed, F.when(reason != "", reason)


def clean(spark: SparkSession, spec: PipelineSpec, lake: Lake, stream: str, start: datetime,
          end: datetime) -> dict[str, Any]:
    """Enforce the schema, dedupe by id, quarantine bad rows; rebuild [start, end) and late-touched hours."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    configure_session(spark)
    event = spec.events[stream]
    lateness = timedelta(seconds=duration_seconds(spec.features.lateness if spec.features else "2d"))
    look_from = start - lateness
    raw_root = raw_prefix(spec.name, event.topic)
    by_part: dict[str, list[str]] = {}
    for path in lake.list(raw_root + "/"):
        match = _PART_RE.search(path)
        if match and path.endswith(".parquet"):
            by_part.setdefault(match.group(0), []).append(path)
    interval = [partition_of(h) for h in hours(start, end)]
    late = []
    for h in hours(look_from, start):
        part = partition_of(h)
        marker = _read_json(lake, _clean_marker(spec.name, stream, part))
        if marker is not None and marker["files"] != by_part.get(part, []):
            late.append(part)
    targets = sorted(set(interval) | set(late))
    context = [p for h in hours(look_from, end) if (p := partition_of(h)) in by_part]
    files = [spark_uri(lake, f) for p in context for f in by_part[p]]
    _log(f"clean {spec.name}.{stream} [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}): {len(files)} raw files, "
         f"late partitions {late or 'none'}")
    summary: dict[str, Any] = {"job": "clean", "pipeline": spec.name, "stream": stream, "start": start, "end": end,
                               "raw_files": len(files), "late_partitions": late, "partitions_written": len(targets)}
    curated, quarantine = curated_prefix(spec.name, stream), quarantine_prefix(spec.name, stream)
    if not files:
        _clear(lake, curated, targets)
        _clear(lake, quarantine, targets)
        for part in targets:
            _write_json(lake, _clean_marker(spec.name, stream, part), {"files": [], "rows": 0, "hash": "0"})
        return {**summary, "rows": 0, "quarantined": 0, "duplicates": 0, "checksum": {"rows": 0, "hash": "0"}}

    raw = spark.read.option("mergeSchema", "true").parquet(*files)
    raw_cols = set(raw.columns)
    typed, reason = _violations(event, raw_cols)
    kafka = [F.col(c) if c in raw_cols else F.lit(None).alias(c)
             for c in ("_kafka_partition", "_kafka_offset", "_kafka_timestamp")]
    where = F.regexp_extract(F.input_file_name(), _PART_RE.pattern, 0)
    rows = raw.select(*typed, *kafka, reason.alias("_reason"), where.alias("_part"))
    rows = rows.withColumn("event_date", F.substring("_part", 12, 10)) \
        .withColumn("event_hour", F.substring("_part", -2, 2))
    rows = rows.persist()
    bad = rows.filter(F.col("_reason").isNotNull() & F.col("_part").isin(targets))
    good = rows.filter(F.col("_reason").isNull())
    first = Window.partitionBy(event.id_field).orderBy(
        F.col("_kafka_timestamp").asc_nulls_last(), F.col("_kafka_partition").asc_nulls_last(),
        F.col("_kafka_offset").asc_nulls_last(), F.col("_part"))
    ranked = good.withColumn("_rank", F.row_number().over(first))
    ranked = ranked.filter(F.col("_part").isin(targets)).persist()
    out = ranked.filter(F.col("_rank") == 1).drop("_rank", "_reason", "_part")
    quarantined = bad.drop("_part").withColumnRenamed("_reason", "quarantine_reason")
    # one pass for the counts and the per-partition checksums the markers record
    kept = F.col("_rank") == 1
    stats = ranked.groupBy("_part").agg(
        F.sum(kept.cast("long")).alias("rows"), F.sum((~kept).cast("long")).alias("dups"),
        F.sum(F.when(kept, F.xxhash64(*[F.col(c) for c in event.fields])).cast("decimal(38,0)")).alias("h"),
    ).collect()
    sums = {r["_part"]: (int(r["rows"]), str(r["h"] or 0)) for r in stats}
    duplicates = sum(int(r["dups"]) for r in stats)
    q_count = quarantined.count()
    _write_parts(out, lake, curated, targets)
    _write_parts(quarantined, lake, quarantine, targets)
    # markers: which raw files each partition was built from, and what it holds
    for part in targets:
        n, h = sums.get(part, (0, "0"))
        marker = {"files": by_part.get(part, []), "rows": n, "hash": h}
        _write_json(lake, _clean_marker(spec.name, stream, part), marker)
    total = {"rows": sum(n for n, _ in sums.values()), "hash": str(sum(int(h) for _, h in sums.values()))}
    rows.unpersist()
    ranked.unpersist()
    return {**summary, "rows": total["rows"], "quarantined": q_count, "duplicates": duplicates, "checksum": total}


def clean_pipeline(spark: SparkSession, spec: PipelineSpec, lake: Lake, start: datetime,
                   end: datetime) -> dict[str, Any]:
    """``ctloop spark clean``: every event stream of the pipeline."""
    streams = {name: clean(spark, spec, lake, name, start, end) for name in spec.events}
    return {"job": "clean", "pipeline": spec.name, "start": start, "end": end, "streams": streams}


# -- features ----------------------------------------------------------------------------------------
def _read_curated(spark: SparkSession, lake: Lake, spec: PipelineSpec, stream: str, start: datetime,
                  end: datetime) -> DataFrame:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType

    prefix = curated_prefix(spec.name, stream)
    event = spec.events[stream]
    if not lake.list(prefix + "/"):
        from pyspark.sql.types import _parse_datatype_string

        schema = StructType([StructField(n, _parse_datatype_string(SPARK_TYPES[f.type]))
                             for n, f in event.fields.items()])
        return spark.createDataFrame([], schema)
    df = spark.read.option("basePath", spark_uri(lake, prefix)).parquet(spark_uri(lake, prefix))
    t = F.col(event.time_field)
    return df.filter((F.col("event_date") >= f"{start:%Y-%m-%d}") & (F.col("event_date") <= f"{end:%Y-%m-%d}")
                     & (t >= F.lit(start)) & (t < F.lit(end))).select(*event.fields)


def _agg_expr(agg: Any, in_window: Any, is_primary: Column) -> Column:
    from pyspark.sql import functions as F

    cond = is_primary if agg.where is None else (is_primary & F.expr(agg.where))
    if agg.function == "count":
        return F.count(F.when(cond, F.lit(1))).over(in_window)
    value = F.when(cond, F.col(agg.column)) if agg.column else None
    if agg.function == "sum":
        return F.coalesce(F.sum(value).over(in_window).cast("double"), F.lit(0.0))
    if agg.function == "mean":
        return F.avg(value).over(in_window).cast("double")
    if agg.function == "min":
        return F.min(value).over(in_window).cast("double")
    if agg.function == "max":
        return F.max(value).over(in_window).cast("double")
    if agg.function == "count_distinct":
        return F.size(F.collect_set(value).over(in_window)).cast("bigint")
    labels = F.sum(F.when(~is_primary, F.lit(1)).otherwise(F.lit(0))).over(in_window)
    events = F.count(F.when(is_primary, F.lit(1))).over(in_window)
    return F.when(events > 0, labels / events).otherwise(F.lit(0.0)).cast("double")


def view_rows(spark: SparkSession, spec: PipelineSpec, lake: Lake, view_name: str, start: datetime,
              end: datetime, created: datetime) -> DataFrame:
    """Feature rows of one view with event time in [start, end).

    A row exists at each source event of the entity; its values describe the entity *just before*
    that event (windows [t - w, t)), which is what the online store holds when the event is scored.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    assert spec.features is not None
    view: FeatureViewSpec = spec.features.views[view_name]
    key = spec.features.entities[view.entity].join_key
    source = spec.events[view.source]
    longest = max([duration_seconds(a.window) for a in view.aggregations] or [0])
    reach = timedelta(seconds=longest)
    base = _read_curated(spark, lake, spec, view.source, start - reach, end)
    ts = F.col(source.time_field)
    events = base.withColumn("_kind", F.lit(0)).withColumn("event_timestamp", ts)
    if any(a.function == "label_rate" for a in view.aggregations):
        label_stream = spec.events[spec.labels.events]
        join = spec.labels.join_key
        labels = _read_curated(spark, lake, spec, spec.labels.events, start - reach, end)
        owners = _read_curated(spark, lake, spec, spec.primary,
                               start - reach - timedelta(days=spec.labels.maturity_days), end).select(join, key)
        labels = labels.select(join, F.col(label_stream.time_field).alias("event_timestamp")) \
            .dropDuplicates([join]).join(owners.dropDuplicates([join]), join)
        extra = [c for c in events.columns if c not in (key, "event_timestamp")]
        labels = labels.select(key, "event_timestamp", *[F.lit(None).cast(events.schema[c].dataType).alias(c)
                                                         for c in extra if c != "_kind"], F.lit(1).alias("_kind"))
        events = events.unionByName(labels)
    events = events.withColumn("_us", F.unix_micros(F.col("event_timestamp")))
    features = []
    for i, agg in enumerate(view.aggregations):
        window = Window.partitionBy(key).orderBy("_us").rangeBetween(-duration_seconds(agg.window) * 1_000_000, -1)
        try:
            features.append(_agg_expr(agg, window, F.col("_kind") == 0).alias(agg.name))
            events.select(features[-1])  # analysis happens here: a bad `where` is named, not a stack trace
        except Exception as exc:
            raise SpecError(f"features.views.{view_name}.aggregations[{i}] ({agg.name}): "
                            f"{str(exc).splitlines()[0]}") from None
    t = F.col("event_timestamp")
    rows = events.select(key, "event_timestamp", "_kind", *features) \
        .filter((F.col("_kind") == 0) & (t >= F.lit(start)) & (t < F.lit(end))).drop("_kind")
    if view.sql:
        for stream in spec.events:
            _read_curated(spark, lake, spec, stream, start - timedelta(days=31), end).createOrReplaceTempView(stream)
        try:
            extra = spark.sql(view.sql)
        except Exception as exc:  # AnalysisException and friends: name the view, keep Spark's reason
            raise SpecError(f"features.views.{view_name}.sql: {str(exc).splitlines()[0]}") from None
        missing = {key, "event_timestamp", *view.sql_features} - set(extra.columns)
        if missing:
            raise SpecError(f"features.views.{view_name}.sql: the query does not return {sorted(missing)}")
        extra = extra.select(key, F.col("event_timestamp").cast("timestamp"),
                             *[F.col(n).cast(SPARK_TYPES[tp]) for n, tp in view.sql_features.items()])
        rows = extra if not view.aggregations else rows.join(extra, [key, "event_timestamp"], "full_outer")
        rows = rows.filter((F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end)))
    return rows.dropDuplicates([key, "event_timestamp"]).withColumn("created_timestamp", F.lit(created)) \
        .select(key, "event_timestamp", "created_timestamp", *view.feature_types,
                *_partition_cols(F.col("event_timestamp")))


def build_features(spark: SparkSession, spec: PipelineSpec, lake: Lake, start: datetime,
                   end: datetime) -> dict[str, Any]:
    """``ctloop spark features``: every view of the spec for [start, end), plus hours late data changed."""
    if spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so there is nothing to compute")
    configure_session(spark)
    lateness = timedelta(seconds=duration_seconds(spec.features.lateness))
    look = [partition_of(h) for h in hours(start - lateness, end)]
    views = {}
    for view_name, view in spec.features.views.items():
        inputs = sorted({view.source} | ({spec.labels.events, spec.primary} if any(
            a.function == "label_rate" for a in view.aggregations) else set()))
        current = {f"{s}/{p}": _read_json(lake, _clean_marker(spec.name, s, p)) for s in inputs for p in look}
        current = {k: f"{v['rows']}:{v['hash']}" for k, v in current.items() if v is not None}
        state = _read_json(lake, _features_state(spec.name, view_name)) or {"inputs": {}}
        changed = sorted(k for k, v in state["inputs"].items() if k in current and current[k] != v
                         and hour_of(k) < start)
        since = min([start, *(hour_of(k) for k in changed)])
        _log(f"features {spec.name}.{view_name} [{since:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H})"
             + (f", recomputing from {since:%Y-%m-%dT%H} for late data in {changed}" if changed else ""))
        rows = view_rows(spark, spec, lake, view_name, since, end, created=end).persist()
        prefix = features_prefix(spec.name, view_name)
        _write_parts(rows, lake, prefix, [partition_of(h) for h in hours(since, end)])
        total = checksum(rows.drop("event_date", "event_hour"))
        rows.unpersist()
        _write_json(lake, _features_state(spec.name, view_name), {"inputs": {**state["inputs"], **current}})
        views[view_name] = {"from": since, "rows": total["rows"], "checksum": total, "late_inputs": changed,
                            "path": lake.url(prefix)}
    return {"job": "features", "pipeline": spec.name, "start": start, "end": end, "views": views}


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
