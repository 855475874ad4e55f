"""Airflow-side code of ctloop: the job operator factory, the DAG helpers, the run-note listener and
the Kafka retrain-request trigger. Light on purpose: DAG files import it at parse time."""
