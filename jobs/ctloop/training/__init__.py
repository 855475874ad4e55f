"""Training: a point-in-time correct snapshot, its data gate, and a Keras model logged to MLflow.

Takes in curated events, labels and Feast's offline features; gives an immutable training-set
snapshot (``training_set``), its Great Expectations verdict (``data_gate``), and a trained model
(``model`` builds it from the spec, ``train`` fits it) logged as an MLflow pyfunc (``pyfunc``) from
code (``pyfunc_code``), never as a pickled object.
"""

__all__ = ["data_gate", "model", "pyfunc", "pyfunc_code", "train", "training_set"]
