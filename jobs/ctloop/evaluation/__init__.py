"""Evaluation: the candidate and the champion scored on the same holdout, and the gate's verdict.

Takes in a training run's model and its snapshot's holdout; gives metric tables overall and per
slice (``metrics``), the gate decision with every check explained (``gate``), both logged to the
candidate's MLflow run (``evaluate``).
"""

__all__ = ["evaluate", "gate", "metrics"]
