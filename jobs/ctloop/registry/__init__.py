"""Registry: gated models become MLflow model versions, and aliases move with a record of every move.

Takes in a training run that passed the gate; gives a registered version that loads in a fresh
process (``register``, ``load_check``) and the ``challenger``/``champion`` aliases with their
history and the last known good version (``aliases``).
"""

__all__ = ["aliases", "load_check", "register"]
