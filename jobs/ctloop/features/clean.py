"""``ctloop spark clean``: raw lake → curated events, per stream, for an interval of whole hours.

Enforces the spec's schema (bad rows go to quarantine with every reason), keeps the first copy of
each event id, and is idempotent. Late data: each hour partition of the look-back window
(``features.lateness``) is compared with the raw files it was last built from (its marker) and
rebuilt when late events have touched it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ctloop.config.spec import EventSpec, PipelineSpec, duration_seconds
from ctloop.features.spark import (
    SPARK_TYPES,
    clear,
    configure_session,
    log,
    read_json,
    spark_uri,
    write_json,
    write_parts,
)
from ctloop.lake.hours import hours
from ctloop.lake.paths import PARTITION_RE, clean_marker, curated_prefix, partition_of, quarantine_prefix, raw_prefix
from ctloop.lake.store import Lake

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession


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
        match = PARTITION_RE.search(path)
        if match and path.endswith(".parquet"):
            by_part.setdefault(match.group(0), []).append(path)
    interval = [partition_of(h) for h in hours(start, end)]
    late = []
    for h in hours(look_from, start):
        part = partition_of(h)
        marker = read_json(lake, clean_marker(spec.name, stream, part))
        if marker is not None and marker["files"] != by_part.get(part, []):
            late.append(part)
    targets = sorted(set(interval) | set(late))
    context = [p for h in hours(look_from, end) if (p := partition_of(h)) in by_part]
    files = [spark_uri(lake, f) for p in context for f in by_part[p]]
    log(f"clean {spec.name}.{stream} [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}): {len(files)} raw files, "
         f"late partitions {late or 'none'}")
    summary: dict[str, Any] = {"job": "clean", "pipeline": spec.name, "stream": stream, "start": start, "end": end,
                               "raw_files": len(files), "late_partitions": late, "partitions_written": len(targets)}
    curated, quarantine = curated_prefix(spec.name, stream), quarantine_prefix(spec.name, stream)
    if not files:
        clear(lake, curated, targets)
        clear(lake, quarantine, targets)
        for part in targets:
            write_json(lake, clean_marker(spec.name, stream, part), {"files": [], "rows": 0, "hash": "0"})
        return {**summary, "rows": 0, "quarantined": 0, "duplicates": 0, "checksum": {"rows": 0, "hash": "0"}}

    raw = spark.read.option("mergeSchema", "true").parquet(*files)
    raw_cols = set(raw.columns)
    typed, reason = _violations(event, raw_cols)
    kafka = [F.col(c) if c in raw_cols else F.lit(None).alias(c)
             for c in ("_kafka_partition", "_kafka_offset", "_kafka_timestamp")]
    where = F.regexp_extract(F.input_file_name(), PARTITION_RE.pattern, 0)
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
    write_parts(out, lake, curated, targets)
    write_parts(quarantined, lake, quarantine, targets)
    # markers: which raw files each partition was built from, and what it holds
    for part in targets:
        n, h = sums.get(part, (0, "0"))
        marker = {"files": by_part.get(part, []), "rows": n, "hash": h}
        write_json(lake, clean_marker(spec.name, stream, part), marker)
    total = {"rows": sum(n for n, _ in sums.values()), "hash": str(sum(int(h) for _, h in sums.values()))}
    rows.unpersist()
    ranked.unpersist()
    return {**summary, "rows": total["rows"], "quarantined": q_count, "duplicates": duplicates, "checksum": total}


def clean_pipeline(spark: SparkSession, spec: PipelineSpec, lake: Lake, start: datetime,
                   end: datetime) -> dict[str, Any]:
    """``ctloop spark clean``: every event stream of the pipeline."""
    streams = {name: clean(spark, spec, lake, name, start, end) for name in spec.events}
    return {"job": "clean", "pipeline": spec.name, "start": start, "end": end, "streams": streams}
