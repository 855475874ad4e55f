"""``ctloop spark features``: curated events → the spec's feature views, for an interval of whole hours.

A feature row exists at each source event of an entity and describes the entity *just before* it
(windows ``[t - w, t)``). Feature data is partitioned by day: the job rebuilds every day the interval
touches. Late data: the curated markers are compared with those the view last read, and the view is
recomputed from the earliest changed day, since a late event changes every trailing window after it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ctloop.config.spec import FeatureViewSpec, PipelineSpec, SpecError, duration_seconds
from ctloop.features.spark import (
    SPARK_TYPES,
    checksum,
    configure_session,
    log,
    partition_col,
    read_curated,
    read_json,
    write_json,
    write_parts,
)
from ctloop.lake.hours import DAY, day_start, days
from ctloop.lake.paths import clean_marker, day_of, day_partition, features_prefix, features_state
from ctloop.lake.store import Lake

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


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
    base = read_curated(spark, lake, spec, view.source, start - reach, end)
    ts = F.col(source.time_field)
    events = base.withColumn("_kind", F.lit(0)).withColumn("event_timestamp", ts)
    if any(a.function == "label_rate" for a in view.aggregations):
        label_stream = spec.events[spec.labels.events]
        join = spec.labels.join_key
        labels = read_curated(spark, lake, spec, spec.labels.events, start - reach, end)
        owners = read_curated(spark, lake, spec, spec.primary,
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
            read_curated(spark, lake, spec, stream, start - timedelta(days=31), end).createOrReplaceTempView(stream)
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
                partition_col(F.col("event_timestamp")))


def build_features(spark: SparkSession, spec: PipelineSpec, lake: Lake, start: datetime,
                   end: datetime) -> dict[str, Any]:
    """``ctloop spark features``: every view of the spec for the days of [start, end), plus days late data changed."""
    if spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so there is nothing to compute")
    configure_session(spark)
    lateness = timedelta(seconds=duration_seconds(spec.features.lateness))
    look = [day_partition(d) for d in days(start - lateness, end)]
    views = {}
    for view_name, view in spec.features.views.items():
        inputs = sorted({view.source} | ({spec.labels.events, spec.primary} if any(
            a.function == "label_rate" for a in view.aggregations) else set()))
        current = {f"{s}/{p}": read_json(lake, clean_marker(spec.name, s, p)) for s in inputs for p in look}
        current = {k: f"{v['rows']}:{v['hash']}" for k, v in current.items() if v is not None}
        state = read_json(lake, features_state(spec.name, view_name)) or {"inputs": {}}
        changed = sorted(k for k, v in state["inputs"].items() if k in current and current[k] != v
                         and day_of(k) < day_start(start))
        since = min([day_start(start), *(day_of(k) for k in changed)])
        until = day_start(end - timedelta(microseconds=1)) + DAY  # whole days: a day partition is written whole
        log(f"features {spec.name}.{view_name} [{since:%Y-%m-%d}, {until:%Y-%m-%d})"
             + (f", recomputing from {since:%Y-%m-%d} for late data in {changed}" if changed else ""))
        rows = view_rows(spark, spec, lake, view_name, since, until, created=end).persist()
        prefix = features_prefix(spec.name, view_name)
        write_parts(rows, lake, prefix, [day_partition(d) for d in days(since, until)])
        total = checksum(rows.drop("event_date"))
        rows.unpersist()
        write_json(lake, features_state(spec.name, view_name), {"inputs": {**state["inputs"], **current}})
        views[view_name] = {"from": since, "rows": total["rows"], "checksum": total, "late_inputs": changed,
                            "path": lake.url(prefix)}
    return {"job": "features", "pipeline": spec.name, "start": start, "end": end, "views": views}
