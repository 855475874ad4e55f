"""The ctloop Airflow plugin: registers the listener that writes decisions into DAG run notes.

The operator factory, DAG helpers and the Kafka trigger live in the ``ctloop_airflow`` package next
to this file (importable because Airflow puts the plugins folder on ``sys.path``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from ctloop_airflow import notes


class CtloopPlugin(AirflowPlugin):
    name = "ctloop"
    listeners = [notes]
