"""Features: raw events → curated events → feature rows → the Feast online store.

Takes in the raw lake and a whole-hour interval; gives curated, deduplicated events (``clean``),
the spec's feature views computed by Spark (``views``, on the shared ``spark`` helpers), the Feast
definitions and store built from the spec (``store``), and the online store filled for the interval
(``materialize``).
"""

__all__ = ["clean", "materialize", "spark", "store", "views"]
