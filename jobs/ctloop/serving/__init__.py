"""Online serving: the registered champion answers Open Inference Protocol v2 requests.

Takes in a model version from the MLflow registry (by alias, ``champion`` by default, or by version),
online features from Feast and requests carrying entity keys and request fields; gives scores and
decisions over HTTP (``server``: dynamic batching (``batcher``), validation (``protocol``), bearer-token
auth (``auth``), Prometheus metrics (``metrics``)), the same scoring in-process (``scorer``), and every
answered prediction as an event on the pipeline's predictions stream (``prediction_log``), which the
lander lands like any other.
"""

__all__ = ["auth", "batcher", "metrics", "prediction_log", "protocol", "scorer", "server"]
