"""The MLflow Model Registry side of the loop: aliases, never stages, and a record of every move.

``challenger`` is set by registration, ``champion`` by the deploy step. Each move is also written as a
run of the experiment ``ctloop-alias-moves`` (who, when, from which version, to which, why), so the
history of an alias, and the last known good champion, is one ``search_runs`` away and visible in the UI.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime
from typing import Any

from ctloop.config.settings import Settings

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


def tags_filter(tags: dict[str, str]) -> str:
    """An MLflow search filter for runs whose tags equal ``tags``; ValueError when MLflow cannot say it.

    MLflow's filter syntax has no escape sequences: it keeps what lies between a value's outer quotes
    as is (``'it''s'`` means ``it''s``). So each value is wrapped in a quote character it does not
    contain, and the whole filter is parsed back with MLflow's own parser: it is returned only when it
    reads as exactly these tag equalities, so no value (``x' or tags.a != 'y``, say) can change the
    query. A value holding both ``'`` and ``"``, or a backslash the parser would take for an escape,
    cannot be written and is refused rather than searched for approximately.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    clauses, expected = [], []
    for key, value in tags.items():
        quote = next((q for q in ("'", '"') if q not in value), None)
        if quote is None:
            raise ValueError(f"{value!r} holds both quote characters: MLflow's search filters cannot express it")
        clauses.append(f"tags.`{key}` = {quote}{value}{quote}")
        expected.append({"type": "tag", "key": key, "comparator": "=", "value": value})
    query = " and ".join(clauses)
    try:
        parsed = SearchUtils.parse_search_filter(query)
    except MlflowException:
        parsed = None
    if parsed != expected:
        raise ValueError(f"{tags!r}: MLflow's search filters cannot express these values "
                         "(a backslash next to a quote?)")
    return query


def history(settings: Settings, model: str, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alias moves of ``model`` (optionally one alias), newest first."""
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    query = tags_filter({"ctloop.model": model, **({"ctloop.alias": alias} if alias else {})})
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string=query, max_results=limit,
                                     order_by=["attributes.start_time DESC"])
    keys = ("model", "alias", "version", "previous_version", "actor", "reason", "at")
    return [{k: run.data.tags.get(f"ctloop.{k}", "") for k in keys} for run in runs]


def last_known_good(settings: Settings, model: str) -> str | None:
    """The champion before the current one: what a rollback goes back to (None before a second champion)."""
    moves = history(settings, model, "champion", limit=1)
    return (moves[0]["previous_version"] or None) if moves else None
