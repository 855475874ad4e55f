"""Simulation: deterministic event streams onto the pipeline's topics, for demos, tests and benchmarks.

Takes in a spec and a seed; gives the same messages every time (``simulator``), with bad events
and drift when asked, sent to Kafka at a chosen rate (``producer``).
"""

__all__ = ["producer", "simulator"]
