"""``python -m ctloop.registry.access``: the MLflow users of the kubernetes runtime and their grants.

In the kubernetes runtime MLflow runs its basic-auth app (``k8s/base/mlflow``) with
``default_permission = NO_PERMISSIONS``: a signed-in user reaches nothing it has not been granted,
and a request without credentials gets 401. Besides the admin, ctloop needs two users:

* the **writer** (``ctloop-job`` by default), for job pods (train, evaluate, register, alias
  moves): ``EDIT`` on every experiment and registered model. It logs runs and models, registers
  versions and moves aliases; it cannot delete them, grant permissions or manage users.
* the **reader** (``ctloop-serving`` by default), for serving: ``READ`` on every experiment and
  registered model. It resolves ``models:/<name>@champion`` and downloads the model; creating a
  run or a model version, or moving an alias, is refused with 403.

Without MLflow workspaces (ctloop runs none), MLflow lets every signed-in user create a new
experiment or registered model and makes it that resource's manager. So the reader could squat the
name of one the writer has not created yet, and then write to it. This step therefore creates
ctloop's experiments (``ctloop-<pipeline>``, ``ctloop-alias-moves``) and registered models
(``ctloop-<pipeline>``) itself, as the admin, and pins the two users' grants on each of them by id:
run it again before a new pipeline's first training.

Run it once after the first deploy, after adding a pipeline, and to rotate a password: a missing
user is created, an existing one gets the password given, and each grant is set to the level above
(whatever it was). The admin signs in as every MLflow client does (``MLFLOW_TRACKING_USERNAME``,
``MLFLOW_TRACKING_PASSWORD``); the writer's and the reader's passwords come from
``MLFLOW_WRITER_PASSWORD`` and ``MLFLOW_READER_PASSWORD``, never from the command
line. It speaks the server's REST API directly, since MLflow's own auth client imports the server
app.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

WRITER_GRANTS = {"experiment": "EDIT", "registered_model": "EDIT"}
READER_GRANTS = {"experiment": "READ", "registered_model": "READ"}
TIMEOUT_S = 30


class AccessError(RuntimeError):
    """The MLflow server refused a user-management call."""


def _call(tracking_uri: str, admin: tuple[str, str], method: str, path: str, **kwargs: Any) -> Any:
    import requests

    return requests.request(method, f"{tracking_uri.rstrip('/')}{path}", auth=admin, timeout=TIMEOUT_S, **kwargs)


def _ok(response: Any, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise AccessError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


def _error_code(response: Any) -> str:
    try:
        return str(response.json().get("error_code", ""))
    except ValueError:
        return ""


def ensure_user(tracking_uri: str, admin: tuple[str, str], username: str, password: str) -> bool:
    """Create ``username`` with ``password``, or set the password of the existing user; True if created."""
    found = _call(tracking_uri, admin, "GET", "/api/2.0/mlflow/users/get", params={"username": username})
    if found.status_code == 200:
        _ok(_call(tracking_uri, admin, "PATCH", "/api/2.0/mlflow/users/update-password",
                  json={"username": username, "password": password}), f"set the password of {username}")
        return False
    if _error_code(found) != "RESOURCE_DOES_NOT_EXIST":
        _ok(found, f"look up user {username}")
    _ok(_call(tracking_uri, admin, "POST", "/api/2.0/mlflow/users/create",
              json={"username": username, "password": password}), f"create user {username}")
    return True


def grant(tracking_uri: str, admin: tuple[str, str], username: str, resource_type: str, permission: str,
          resource_id: str = "*") -> None:
    """Give ``username`` exactly ``permission`` on ``resource_type`` ``resource_id`` (``*``: every one)."""
    body = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    granted = _call(tracking_uri, admin, "POST", "/api/3.0/mlflow/users/permissions/grant",
                    json={**body, "permission": permission})
    if granted.status_code != 200 and _error_code(granted) == "RESOURCE_ALREADY_EXISTS":
        _ok(_call(tracking_uri, admin, "POST", "/api/3.0/mlflow/users/permissions/revoke", json=body),
            f"revoke {username}'s earlier grant on {resource_type} {resource_id}")
        granted = _call(tracking_uri, admin, "POST", "/api/3.0/mlflow/users/permissions/grant",
                        json={**body, "permission": permission})
    _ok(granted, f"grant {permission} on {resource_type} {resource_id} to {username}")


def ensure_experiment(tracking_uri: str, admin: tuple[str, str], name: str) -> str:
    """The id of experiment ``name``, created by the admin if missing."""
    found = _call(tracking_uri, admin, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                  params={"experiment_name": name})
    if found.status_code == 200:
        return str(found.json()["experiment"]["experiment_id"])
    if _error_code(found) != "RESOURCE_DOES_NOT_EXIST":
        _ok(found, f"look up experiment {name}")
    created = _call(tracking_uri, admin, "POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
    return str(_ok(created, f"create experiment {name}")["experiment_id"])


def ensure_registered_model(tracking_uri: str, admin: tuple[str, str], name: str) -> str:
    """Registered model ``name`` (its id for grants is its name), created by the admin if missing."""
    found = _call(tracking_uri, admin, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
    if found.status_code != 200:
        if _error_code(found) != "RESOURCE_DOES_NOT_EXIST":
            _ok(found, f"look up registered model {name}")
        _ok(_call(tracking_uri, admin, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}),
            f"create registered model {name}")
    return name


def provision(tracking_uri: str, admin: tuple[str, str], writer: tuple[str, str], reader: tuple[str, str],
              experiments: tuple[str, ...] = (), registered_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """The writer and the reader with their passwords and grants, and ctloop's experiments and registered
    models created with both users' grants pinned on them; what was done, without passwords."""
    users = {"writer": (writer, WRITER_GRANTS), "reader": (reader, READER_GRANTS)}
    done: dict[str, Any] = {"tracking_uri": tracking_uri}
    for role, ((username, password), grants) in users.items():
        created = ensure_user(tracking_uri, admin, username, password)
        for resource_type, permission in grants.items():
            grant(tracking_uri, admin, username, resource_type, permission)
        done[role] = {"username": username, "created": created, "grants": {f"{t}:*": p for t, p in grants.items()}}
    resources = [("experiment", name, ensure_experiment(tracking_uri, admin, name)) for name in experiments]
    resources += [("registered_model", name, ensure_registered_model(tracking_uri, admin, name))
                  for name in registered_models]
    for resource_type, name, resource_id in resources:
        for role, ((username, _), grants) in users.items():
            grant(tracking_uri, admin, username, resource_type, grants[resource_type], resource_id)
            done[role]["grants"][f"{resource_type}:{name}"] = grants[resource_type]
    return done


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ctloop.config.settings import load_settings
    from ctloop.config.spec import load_spec
    from ctloop.registry.aliases import AUDIT_EXPERIMENT
    from ctloop.training.train import experiment_name

    parser = argparse.ArgumentParser(prog="python -m ctloop.registry.access", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="default: CTLOOP_MLFLOW_TRACKING_URI")
    parser.add_argument("--writer", default="ctloop-job", help="the job pods' MLflow user (default %(default)s)")
    parser.add_argument("--reader", default="ctloop-serving", help="serving's MLflow user (default %(default)s)")
    parser.add_argument("--pipeline", action="append", help="a pipeline to prepare (default: every spec)")
    args = parser.parse_args(argv)
    settings = load_settings()
    names = args.pipeline or sorted(p.stem for p in settings.pipelines_dir.glob("*.yaml"))
    specs = [load_spec(name, settings.pipelines_dir) for name in names]
    admin = (_env("MLFLOW_TRACKING_USERNAME"), _env("MLFLOW_TRACKING_PASSWORD"))
    return provision(args.tracking_uri or settings.mlflow_tracking_uri, admin,
                     (args.writer, _env("MLFLOW_WRITER_PASSWORD")),
                     (args.reader, _env("MLFLOW_READER_PASSWORD")),
                     experiments=(*(experiment_name(spec, settings) for spec in specs), AUDIT_EXPERIMENT),
                     registered_models=tuple(spec.registered_model for spec in specs))


if __name__ == "__main__":
    print(json.dumps(main()))
