"""Orchestration helpers: what the Airflow side needs from ctloop, light enough for DAG parse time.

Takes in job results and asset events; gives intervals, verdicts and the lines of a run's note
(``notes``), and a small REST client that drives Airflow from scripts and ``make demo`` (``client``).
"""

__all__ = ["client", "notes"]
