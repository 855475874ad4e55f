"""One SparkSession for the whole test session (a JVM start costs ~5 s), small shuffles, no UI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from ctloop.config.settings import load_settings
    from ctloop.features.spark import spark_session

    session = spark_session(load_settings(spark_master="local[2]", spark_shuffle_partitions=4), "ctloop-tests")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()
