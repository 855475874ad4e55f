"""``ctloop spark clean``: raw lake → curated events, per stream, for an interval of whole hours.

Enforces the spec's schema (bad rows go to quarantine with every reason), keeps the first copy of
each event id, and is idempotent. Curated data is partitioned by day, so the job rebuilds every day
the interval touches, from all the raw files of that day. Late data: each day of the look-back window
(``features.lateness``) is compared with the raw files it was last built from (its marker) and
rebuilt when late events have touched it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ctloop.config.spec import EventSpec, PipelineSpec, duration_seconds
from ctloop.features.spark import (
    clear,
    configure_session,
    event_schema,
    log,
    read_json,
    spark_uri,
    write_json,
    write_parts,
)
from ctloop.lake.hours import DAY, day_start, days, parse_time
from ctloop.lake.paths import (
    HOUR_PARTITION_RE,
    clean_marker,
    curated_prefix,
    day_of,
    day_partition,
    quarantine_prefix,
    raw_prefix,
)
from ctloop.lake.store import Lake

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import StructType


def _raw_schema(event: EventSpec) -> StructType:
    """The raw files' columns as the lander writes them: the spec's fields in their types (the lander validated
    every event against them) and the Kafka coordinates. Reading with it needs no file footers, and files
    landed before a field was added read it as null."""
    from pyspark.sql.types import IntegerType, LongType, TimestampType

    return event_schema(event).add("_kafka_partition", IntegerType()).add("_kafka_offset", LongType()) \
        .add("_kafka_timestamp", TimestampType())


def _violations(event: EventSpec) -> Column:
    """One reason expression (null when the row is fine) naming every failed field."""
    from pyspark.sql import functions as F

    reasons = []
    for name, field in event.fields.items():
        value = F.col(f"`{name}`")
        if field.required:
            reasons.append(F.when(value.isNull(), F.lit(f"{name}: required but null")))
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
    return F.when(reason != "", reason)


def clean(spark: SparkSession, spec: PipelineSpec, lake: Lake, stream: str, start: datetime,
          end: datetime) -> dict[str, Any]:
    """Enforce the schema, dedupe by id, quarantine bad rows; rebuild the days of [start, end) and late-touched days."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    configure_session(spark)
    event = spec.events[stream]
    lateness = timedelta(seconds=duration_seconds(spec.features.lateness if spec.features else "2d"))
    look_from = start - lateness
    raw_root = raw_prefix(spec.name, event.topic)
    by_part: dict[str, list[str]] = {}  # day partition → its raw files (the lander writes them by hour)
    for path in lake.list(raw_root + "/"):
        if path.endswith(".parquet") and HOUR_PARTITION_RE.search(path):
            by_part.setdefault(day_partition(day_of(path)), []).append(path)
    interval = [day_partition(d) for d in days(start, end)]
    late = []
    for d in days(look_from, day_start(start)):
        part = day_partition(d)
        marker = read_json(lake, clean_marker(spec.name, stream, part))
        if marker is not None and marker["files"] != by_part.get(part, []):
            late.append(part)
    targets = sorted(set(interval) | set(late))
    context = [p for d in days(look_from, end) if (p := day_partition(d)) in by_part]
    files = [f for p in context for f in by_part[p]]
    log(f"clean {spec.name}.{stream} [{start:%Y-%m-%dT%H}, {end:%Y-%m-%dT%H}): {len(files)} raw files, "
         f"{len(targets)} days to write, late days {late or 'none'}")

    def known_until(part: str) -> str:
        """How far a rebuilt day is known: its end, or the interval's end when that falls inside it, and never less
        than an earlier build said (a late batch re-run for an early hour rebuilds the day from every raw file)."""
        built = read_json(lake, clean_marker(spec.name, stream, part)) or {}
        return max(min(day_of(part) + DAY, end), parse_time(built.get("until", day_of(part).isoformat()))).isoformat()

    summary: dict[str, Any] = {"job": "clean", "pipeline": spec.name, "stream": stream, "start": start, "end": end,
                               "raw_files": len(files), "late_partitions": late, "partitions_written": len(targets)}
    curated, quarantine = curated_prefix(spec.name, stream), quarantine_prefix(spec.name, stream)
    if not files:
        clear(lake, curated, targets)
        clear(lake, quarantine, targets)
        for part in targets:
            write_json(lake, clean_marker(spec.name, stream, part),
                       {"files": [], "rows": 0, "hash": "0", "until": known_until(part)})
        return {**summary, "rows": 0, "quarantined": 0, "duplicates": 0, "checksum": {"rows": 0, "hash": "0"}}

    # the context's day folders, not its files one by one: Spark lists each folder once (a path per file costs
    # a listing each); the hour folders below become the event_date and event_hour columns
    raw = spark.read.schema(_raw_schema(event)).option("basePath", spark_uri(lake, raw_root)) \
        .parquet(*[spark_uri(lake, f"{raw_root}/{p}") for p in context])
    rows = raw.select(*event.fields, "_kafka_partition", "_kafka_offset", "_kafka_timestamp", "event_date",
                      _violations(event).alias("_reason"), F.concat(F.lit("event_date="), "event_date").alias("_part"))
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
    # markers: which raw files each day was built from, what it holds, and how far it is known
    for part in targets:
        n, h = sums.get(part, (0, "0"))
        marker = {"files": by_part.get(part, []), "rows": n, "hash": h, "until": known_until(part)}
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
