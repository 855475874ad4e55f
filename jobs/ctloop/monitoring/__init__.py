"""Monitoring: judges landed intervals and served predictions, and turns what it finds into retrain requests.

Takes in: landed events and the prediction log (lake), the champion's reference snapshot (registry),
delayed labels. Gives out: ``ctloop monitor``'s checks (drift, quality, performance) with their
evidence, reports and Data Docs in the lake, metrics, and alerts through Airflow notifiers.
"""

__all__ = ["alerts", "blocks", "checks", "drift", "monitor", "performance", "quality", "reference"]
