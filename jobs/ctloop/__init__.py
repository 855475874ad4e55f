"""ctloop: continuous training for ML teams, orchestrated by Apache Airflow."""

__version__ = "0.1.0"
