"""Spark for the feature jobs: the session, and the lake reads and writes both jobs share.

Every job interval is ``[start, end)`` on whole hours; a job replaces exactly the day partitions it
owns (delete, then write: one file per day), so a re-run over the same raw files leaves the same rows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ctloop.config.settings import Settings
from ctloop.config.spec import EventSpec, PipelineSpec
from ctloop.lake.paths import curated_prefix
from ctloop.lake.store import Lake

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

SPARK_TYPES = {"string": "string", "int": "bigint", "double": "double", "bool": "boolean", "timestamp": "timestamp"}


def s3a(url: str) -> str:
    """Spark reads S3 through the s3a connector (the job image adds hadoop-aws)."""
    return "s3a://" + url.removeprefix("s3://") if url.startswith("s3://") else url


def spark_uri(lake: Lake, path: str) -> str:
    return s3a(lake.url(path))


def log(message: str) -> None:
    print(f"[spark] {message}", file=sys.stderr, flush=True)



# -- the session -----------------------------------------------------------------------------------
def spark_conf(settings: Settings) -> dict[str, str]:
    """The session's configuration: the jobs' own sessions and Feast's Spark offline store use the same."""
    conf = {"spark.master": settings.spark_master, "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
            "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "4g"}
    if settings.s3_endpoint_url:
        conf |= {"spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint_url,
                 "spark.hadoop.fs.s3a.path.style.access": "true"}
    return conf


def spark_session(settings: Settings, app: str = "ctloop") -> SparkSession:
    """The active session if there is one (tests share one), else a new one on ``settings.spark_master``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Python workers (Feast's Spark engine runs UDFs in them) run this interpreter unless told otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def configure_session(spark: SparkSession) -> None:
    """Settings the jobs rely on, applied to a session someone else built."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    # Feast's Spark offline store turns this on in the session it shares; the jobs quote names, not regexes
    spark.conf.set("spark.sql.parser.quotedRegexColumnNames", "false")


# -- lake reads and writes ---------------------------------------------------------------------------
def read_json(lake: Lake, path: str) -> Any:
    return json.loads(lake.read(path)) if lake.exists(path) else None


def write_json(lake: Lake, path: str, data: Any) -> None:
    lake.write(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode())


def clear(lake: Lake, prefix: str, parts: Iterable[str]) -> None:
    for part in parts:
        for path in lake.list(f"{prefix}/{part}/"):
            lake.delete(path)


def checksum(df: DataFrame) -> dict[str, Any]:
    """Order-independent content checksum: row count and the sum of every row's 64-bit hash."""
    from pyspark.sql import functions as F

    row = df.select(F.count(F.lit(1)).alias("rows"),
                    F.sum(F.xxhash64(*[F.col(c) for c in sorted(df.columns)]).cast("decimal(38,0)")).alias("h")).first()
    return {"rows": int(row["rows"]), "hash": str(row["h"] or 0)}


def partition_col(time_col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.date_format(time_col, "yyyy-MM-dd").alias("event_date")


def write_parts(df: DataFrame, lake: Lake, prefix: str, parts: list[str]) -> None:
    """Replace exactly the day partitions ``parts`` under ``prefix``: delete them, then write the rows Spark
    produced, one file per day, sorted by the first column (the id or entity key, which readers filter on)."""
    clear(lake, prefix, parts)
    if parts:
        (df.repartition("event_date").sortWithinPartitions(*df.columns[:1])
         .write.mode("append").partitionBy("event_date").parquet(spark_uri(lake, prefix)))


def event_schema(event: EventSpec) -> StructType:
    """The spec's fields of a stream in their Spark types."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType([StructField(n, _parse_datatype_string(SPARK_TYPES[f.type])) for n, f in event.fields.items()])


def read_curated(spark: SparkSession, lake: Lake, spec: PipelineSpec, stream: str, start: datetime,
                  end: datetime) -> DataFrame:
    from pyspark.sql import functions as F

    prefix = curated_prefix(spec.name, stream)
    event = spec.events[stream]
    if not lake.list(prefix + "/"):
        return spark.createDataFrame([], event_schema(event))
    df = spark.read.option("basePath", spark_uri(lake, prefix)).parquet(spark_uri(lake, prefix))
    t = F.col(event.time_field)
    return df.filter((F.col("event_date") >= f"{start:%Y-%m-%d}") & (F.col("event_date") <= f"{end:%Y-%m-%d}")
                     & (t >= F.lit(start)) & (t < F.lit(end))).select(*event.fields)
