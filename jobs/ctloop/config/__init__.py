"""Configuration: the typed ``Settings`` of a runtime (``CTLOOP_*`` environment) and the pipeline spec.

Takes in the environment and ``pipelines/<name>.yaml``; gives every other stage one validated
``Settings`` object and one ``PipelineSpec``: the single source of truth for event schemas,
features, label, model, gate and retrain policy.
"""

__all__ = ["settings", "spec"]
