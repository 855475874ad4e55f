"""Feast definitions built from the pipeline spec: the spec is the one place features are declared.

``feature_repo/definitions.py`` (what ``feast plan``/``feast apply`` read) and the ctloop jobs both call
``repo_objects``, so the entities, sources, feature views (with TTL) and the model's feature service
can never drift from what Spark computes. The store itself is configured from ``Settings``: locally a
SQLite online store and DuckDB over the lake's Parquet offline; in production Redis online, and Spark
over the Parquet on S3 offline (Feast's Spark offline store and materialization engine), so neither
the point-in-time join nor materialization is one process scanning S3.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, duration_seconds, load_spec
from ctloop.lake.paths import features_prefix

if TYPE_CHECKING:
    from feast import FeatureStore


def offline_path(settings: Settings, pipeline: str, view: str) -> str:
    """Where Feast reads a view's rows: the folder the Spark features job writes (one file per day)."""
    url = f"{settings.lake_uri}/{features_prefix(pipeline, view)}"
    if url.startswith("file://"):
        return urlparse(url).path
    if settings.feast_offline_store == "spark":
        from ctloop.features.spark import s3a

        return s3a(url)
    return url


def _source(settings: Settings, pipeline: str, view: str) -> Any:
    """The view's offline source: a Spark source (pruned by ``event_date``) or a file source for DuckDB."""
    path = offline_path(settings, pipeline, view)
    times = {"timestamp_field": "event_timestamp", "created_timestamp_column": "created_timestamp"}
    if settings.feast_offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{pipeline}__{view}", path=path, file_format="parquet",
                           date_partition_column="event_date", **times)
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(name=f"{pipeline}__{view}", path=path, file_format=ParquetFormat(), **times,
                      s3_endpoint_override=settings.s3_endpoint_url if path.startswith("s3://") else None)


def repo_objects(spec: PipelineSpec, settings: Settings) -> list[Any]:
    """Entities, file sources, feature views and the feature service of one pipeline."""
    from feast import Entity, FeatureService, FeatureView, Field, ValueType
    from feast.types import Float64, Int64

    if spec.features is None:
        return []
    dtypes = {"int": Int64, "double": Float64}
    entities = {name: Entity(name=name, join_keys=[e.join_key], value_type=ValueType.STRING,
                             description=e.description, tags={"pipeline": spec.name})
                for name, e in spec.features.entities.items()}
    views = []
    for name, view in spec.features.views.items():
        source = _source(settings, spec.name, name)
        views.append(FeatureView(
            name=name, entities=[entities[view.entity]], ttl=timedelta(seconds=duration_seconds(view.ttl)),
            schema=[Field(name=f, dtype=dtypes[t]) for f, t in view.feature_types.items()],
            source=source, online=True, tags={"pipeline": spec.name, "spec_hash": spec.spec_hash},
        ))
    service = FeatureService(name=spec.feature_service, features=views,
                             tags={"pipeline": spec.name, "spec_hash": spec.spec_hash})
    return [*entities.values(), *views, service]


def all_repo_objects(settings: Settings) -> list[Any]:
    """Every pipeline's objects (specs without a ``features`` section contribute none)."""
    objects: list[Any] = []
    for path in sorted(Path(settings.pipelines_dir).glob("*.yaml")):
        objects.extend(repo_objects(load_spec(path.stem, Path(settings.pipelines_dir)), settings))
    return objects


def repo_config(settings: Settings) -> Any:
    """The same store ``feature_store.yaml`` describes, from ``Settings`` (no YAML on the job path)."""
    from feast.repo_config import RepoConfig

    if settings.feast_online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.feast_redis.get_secret_value()}
    else:
        Path(settings.feast_sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        online = {"type": "sqlite", "path": settings.feast_sqlite_path}
    if "://" not in settings.feast_registry:
        Path(settings.feast_registry).parent.mkdir(parents=True, exist_ok=True)
    if settings.feast_offline_store == "spark":
        from ctloop.features.spark import spark_conf

        offline: dict[str, Any] = {"type": "spark", "spark_conf": spark_conf(settings)}
        engine: dict[str, Any] = {"type": "spark.engine", "spark_conf": spark_conf(settings)}
    else:
        offline, engine = {"type": "duckdb"}, {"type": "local"}
    return RepoConfig(project=settings.feast_project, provider="local",
                      registry={"registry_type": "file", "path": settings.feast_registry, "cache_ttl_seconds": 60},
                      online_store=online, offline_store=offline, batch_engine=engine,
                      entity_key_serialization_version=3)


def open_store(settings: Settings, spec: PipelineSpec | None = None, *, apply: bool = True) -> FeatureStore:
    """A FeatureStore on ``settings``; with ``apply`` the spec's objects are registered first.

    Applying is idempotent and touches only definitions: ctloop keeps materialization watermarks in
    the lake, so an apply can never reset them. The jobs that apply are the ones that read offline
    (materialize, training-set): with the Spark offline store their session starts here, with the jobs'
    settings, for Feast to take. A store opened without ``apply`` serves online lookups (the model
    server, whose image has no Java) and starts nothing.
    """
    from feast import FeatureStore

    if apply and settings.feast_offline_store == "spark":
        from ctloop.features.spark import spark_session

        spark_session(settings, "ctloop-feast")
    store = FeatureStore(config=repo_config(settings))
    if apply and spec is not None:
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the job's JSON summary only
            store.apply(repo_objects(spec, settings))
    return store
