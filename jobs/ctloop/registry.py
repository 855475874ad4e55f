"""The MLflow Model Registry side of the loop: aliases, never stages, and a record of every move.

``challenger`` is set by registration, ``champion`` by the deploy step. Each move is also written as a
run of the experiment ``ctloop-alias-moves`` (who, when, from which version, to which, why), so the
history of an alias, and the last known good champion, is one ``search_runs`` away and visible in the UI.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ctloop.settings import Settings

AUDIT_EXPERIMENT = "ctloop-alias-moves"


class RegistryError(ValueError):
    """A registry action that must not happen (a refused candidate, an unknown version); says why."""


def client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def actor(settings: Settings) -> str:
    """Who moves an alias: the setting, else the Airflow task running us, else user@host."""
    if settings.actor:
        return settings.actor
    dag, run = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if dag and run:
        return f"airflow:{dag}/{run}"
    return f"{getpass.getuser()}@{socket.gethostname()}"


def current_version(mlflow_client: Any, model: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def move_alias(settings: Settings, model: str, alias: str, version: str, reason: str) -> dict[str, Any]:
    """Point ``alias`` at ``version`` and record the move; returns the record."""
    mlflow_client = client(settings)
    previous = current_version(mlflow_client, model, alias)
    mlflow_client.set_registered_model_alias(model, alias, version)
    record = {"model": model, "alias": alias, "version": str(version), "previous_version": previous or "",
              "actor": actor(settings), "reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    mlflow_client.set_model_version_tag(model, version, f"ctloop.alias.{alias}.set_at", record["at"])
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment(AUDIT_EXPERIMENT)
    run = mlflow_client.create_run(experiment_id, run_name=f"{model}@{alias} → v{version}",
                                   tags={f"ctloop.{k}": v for k, v in record.items()})
    mlflow_client.set_terminated(run.info.run_id)
    return record


def history(settings: Settings, model: str, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alias moves of ``model`` (optionally one alias), newest first."""
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    query = f"tags.`ctloop.model` = '{model}'" + (f" and tags.`ctloop.alias` = '{alias}'" if alias else "")
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string=query, max_results=limit,
                                     order_by=["attributes.start_time DESC"])
    keys = ("model", "alias", "version", "previous_version", "actor", "reason", "at")
    return [{k: run.data.tags.get(f"ctloop.{k}", "") for k in keys} for run in runs]


def last_known_good(settings: Settings, model: str) -> str | None:
    """The champion before the current one: what a rollback goes back to (None before a second champion)."""
    moves = history(settings, model, "champion", limit=1)
    return (moves[0]["previous_version"] or None) if moves else None


def infra_check(model_uri: str, settings: Settings, timeout_s: float = 300) -> dict[str, Any]:
    """Load the logged model in a fresh process through MLflow's pyfunc loader and predict its input example.

    A fresh interpreter is what serving will be: nothing of the training process (imported classes,
    registered Keras objects, warm caches) can hide a model that does not load on its own.
    """
    import json
    import subprocess

    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ctloop.infra_check", model_uri], capture_output=True, text=True,
                          env=env, timeout=timeout_s, check=False)
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
    model_uri = tags["ctloop.model_uri"]
    check = infra_check(model_uri, settings)
    print(f"[register] infra check: {model_uri} loaded and scored {check['rows']} example rows in a fresh process "
          f"({check['seconds']}s)", flush=True, file=sys.stderr)
    name = spec.registered_model
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
