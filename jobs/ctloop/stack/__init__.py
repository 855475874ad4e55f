"""The embedded stack of the ``local`` runtime: broker, MLflow and Airflow as supervised processes.

Takes in ``Settings``; gives the service definitions (``services``, ``airflow``, on the shared
``service`` checks) and their supervisor (``supervisor``: ``ctloop stack up|status|down``).
"""

__all__ = ["airflow", "service", "services", "supervisor"]
