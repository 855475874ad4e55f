"""The data lake: one interface over a local folder and S3, every path in it, and its notion of time.

Takes in bytes and Arrow datasets; gives durable, atomic writes (``store``), the one map of where
each stage keeps its data and bookkeeping (``paths``), and the whole-hour intervals the jobs are
keyed by (``hours``).
"""

__all__ = ["hours", "paths", "store"]
