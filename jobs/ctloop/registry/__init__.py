"""Registry: gated models become MLflow model versions, and aliases move with a record of every move.

Takes in a training run that passed the gate; gives a registered version that loads in a fresh
process (``register``, ``load_check``) and the ``challenger``/``champion`` aliases with their
history and the last known good version (``aliases``). In the kubernetes runtime MLflow requires
sign-in; ``access`` provisions its writer user (job pods) and read-only user (serving).
"""

__all__ = ["access", "aliases", "load_check", "register"]
