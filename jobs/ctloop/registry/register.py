"""``ctloop register``: a gated candidate becomes a registered model version with the ``challenger`` alias.

Nothing is registered that the gate did not pass, that was compared with a champion that has since
changed, or that does not load and predict in a fresh interpreter (the infra check), since that is
what serving will do with it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ctloop.config.settings import Settings
from ctloop.registry.aliases import RegistryError, client, current_version, move_alias


def infra_check(model_uri: str, settings: Settings, timeout_s: float = 300) -> dict[str, Any]:
    """Load the logged model in a fresh process through MLflow's pyfunc loader and predict its input example.

    A fresh interpreter is what serving will be: nothing of the training process (imported classes,
    registered Keras objects, warm caches) can hide a model that does not load on its own.
    """
    import json
    import subprocess

    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ctloop.registry.load_check", model_uri], capture_output=True,
                          text=True, env=env, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RegistryError(f"infra check failed: {model_uri} does not load and predict in a fresh process:\n{tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "seconds": round(time.monotonic() - started, 2)}


def register(spec: Any, settings: Settings, run_id: str) -> dict[str, Any]:
    """Infra-check the run's model, register it and point ``challenger`` at it, if the gate passed it."""
    mlflow_client = client(settings)
    run = mlflow_client.get_run(run_id)
    tags = run.data.tags
    if tags.get("ctloop.pipeline") != spec.name:
        raise RegistryError(f"run {run_id} is not a {spec.name!r} training run "
                            f"(its pipeline tag is {tags.get('ctloop.pipeline')!r})")
    gate = tags.get("ctloop.gate")
    if gate != "passed":
        why = tags.get("ctloop.gate_reasons", "") if gate else "it has not been evaluated (run `ctloop evaluate`)"
        raise RegistryError(f"run {run_id} is not registered: the gate {gate or 'decision is missing'}; {why}")
    name = spec.registered_model
    compared, now = tags.get("ctloop.champion_version", ""), current_version(mlflow_client, name, "champion") or ""
    if compared != now:
        raise RegistryError(f"run {run_id} is not registered: the gate compared it with "
                            f"{'champion v' + compared if compared else 'no champion'}, but the champion is now "
                            f"{'v' + now if now else 'unset'}; run `ctloop evaluate` again")
    model_uri = tags["ctloop.model_uri"]
    check = infra_check(model_uri, settings)
    print(f"[register] infra check: {model_uri} loaded and scored {check['rows']} example rows in a fresh process "
          f"({check['seconds']}s)", flush=True, file=sys.stderr)
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name, description=f"ctloop pipeline {spec.name}: {spec.description}",
                                              tags={"ctloop.pipeline": spec.name})
    lineage = {k: v for k, v in tags.items() if k.startswith("ctloop.") and k != "ctloop.gate_reasons"}
    import mlflow

    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    registered = mlflow.register_model(model_uri, name, await_registration_for=120,
                                       tags={**lineage, "ctloop.infra_check": "passed"})
    version = _wait_ready(mlflow_client, name, str(registered.version))
    mlflow_client.update_model_version(name, version, description=f"gate: {tags.get('ctloop.gate_reasons', '')}")
    move = move_alias(settings, name, "challenger", version,
                      f"passed the evaluation gate and the infra check (run {run_id})")
    return {"model": name, "version": version, "alias": "challenger", "run_id": run_id, "model_uri": model_uri,
            "previous_challenger": move["previous_version"] or None, "infra_check": check,
            "champion": current_version(mlflow_client, name, "champion"),
            "registry_uri": f"models:/{name}@challenger"}


def _wait_ready(mlflow_client: Any, name: str, version: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = mlflow_client.get_model_version(name, version).status
        if status == "READY":
            return version
        if status == "FAILED_REGISTRATION":
            raise RegistryError(f"MLflow could not register {name} version {version}")
        time.sleep(0.5)
    raise RegistryError(f"{name} version {version} was not READY within {timeout_s:.0f}s")
