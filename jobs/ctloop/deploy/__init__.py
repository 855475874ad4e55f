"""Deploy: a registered model version goes live blue-green, watched, and rolled back on a breach.

Takes in a registered version (the train DAG's ``registered``, or ``ctloop deploy --version N``);
gives the version serving behind the live URL, or a refusal or rollback with its reason. The
candidate loads into the idle slot, answers its golden requests (``golden``: rows of its holdout and
its own scores), traffic switches at once, the watch reads error rate and p99, and only then does
``champion`` move (``deploy``). Two backends: the ``local`` traffic switch (``switch``, its
admin API driven by ``local``, its per-slot counts in ``stats``) and the ``kubernetes`` slot
Deployments and Service (``kube``). Every step is a record in the lake (``records``).
"""

__all__ = ["deploy", "golden", "kube", "local", "records", "stats", "switch"]
