"""Retrain: which retrain requests start a training run, and a ledger of every decision.

Takes in requests from the schedule, new features, the monitor, Kafka and the REST API; gives
one decision per request under the spec's policy (``policy``), recorded durably in the lake with
the outcome of the run it started (``ledger``).
"""

__all__ = ["ledger", "policy"]
