"""Ingest: Kafka topics into the lake as Parquet, exactly once.

Takes in the pipeline's topics (``broker`` connects, ``events`` validates each message against the
spec); gives raw Parquet files per event hour, dead letters with their reason, and a manifest per
landed batch (``lander``), which ``manifests`` reads back for lineage and training windows and
``announce`` turns into what the ingest DAG tells Airflow, whoever landed it.
"""

__all__ = ["announce", "broker", "events", "lander", "manifests", "metrics"]
