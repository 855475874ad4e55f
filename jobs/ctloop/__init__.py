"""ctloop: continuous training, orchestrated by Airflow."""
