"""MLflow behind its basic-auth app, as the kubernetes runtime runs it: no anonymous access, a read-only serving user.

A real ``mlflow server --app-name basic-auth`` on 127.0.0.1 with the auth config of
``k8s/base/mlflow`` (``default_permission = NO_PERMISSIONS``; SQLite here for the backend and the
auth database), its users and grants provisioned by ``ctloop.registry.access`` as docs/deploy-aws.md
does. The local runtime's MLflow stays unauthenticated (it listens on 127.0.0.1 only).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ctloop.stack.service import free_port

ADMIN = ("admin", "admin-password-for-tests")
WRITER = ("ctloop-job", "writer-password-for-tests")
READER = ("ctloop-serving", "reader-password-for-tests")
NAME = "ctloop-auth-test"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("MLflow's basic-auth app needs Flask-WTF: the project must depend on mlflow[auth]")
    state = tmp_path_factory.mktemp("mlflow-auth")
    config = state / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                      f"database_uri = sqlite:///{state / 'auth.db'}\nadmin_username = {ADMIN[0]}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
               MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-flask-secret", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(state / "mlflow.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                             "--artifacts-destination", str(state / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0 and requests.get(f"{uri}/health", timeout=5).ok:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"mlflow server --app-name basic-auth did not start:\n{(state / 'mlflow.log').read_text()[-3000:]}")
    yield uri
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def provisioned(auth_server: str) -> dict[str, Any]:
    from ctloop.registry.access import provision

    return provision(auth_server, ADMIN, WRITER, READER, experiments=(NAME,), registered_models=(NAME,))


def test_without_credentials_nothing_is_read_or_written(auth_server: str) -> None:
    assert requests.get(f"{auth_server}/health", timeout=10).status_code == 200  # the probes need no sign-in
    create = {"name": "anonymous"}
    assert requests.post(f"{auth_server}/api/2.0/mlflow/experiments/create", json=create, timeout=10).status_code == 401
    search = f"{auth_server}/api/2.0/mlflow/registered-models/search"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(READER[0], "not-the-password"), timeout=10).status_code == 401


def test_the_reader_reads_what_the_writer_logged_but_writes_nothing(
        auth_server: str, provisioned: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials reach the MLflow client as MLFLOW_TRACKING_USERNAME/PASSWORD, as in the pods."""
    from ctloop.registry.access import provision
    from mlflow import MlflowClient

    assert provisioned["reader"]["grants"] == {"experiment:*": "READ", "registered_model:*": "READ",
                                               f"experiment:{NAME}": "READ", f"registered_model:{NAME}": "READ"}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WRITER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER[1])
    writer = MlflowClient(auth_server, registry_uri=auth_server)
    experiment_id = writer.get_experiment_by_name(NAME).experiment_id  # created by the provisioning, as the admin
    run = writer.create_run(experiment_id)
    writer.log_metric(run.info.run_id, "pr_auc", 0.5)
    version = writer.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    writer.set_registered_model_alias(NAME, "champion", version.version)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    reader = MlflowClient(auth_server, registry_uri=auth_server)
    assert reader.get_model_version_by_alias(NAME, "champion").version == version.version
    assert reader.get_run(run.info.run_id).data.metrics == {"pr_auc": 0.5}

    api = f"{auth_server}/api/2.0/mlflow"
    writes = {
        "create a run": ("runs/create", {"experiment_id": experiment_id}),
        "log to the writer's run": ("runs/log-metric", {"run_id": run.info.run_id, "key": "pr_auc", "value": 1.0,
                                                        "timestamp": 0, "step": 0}),
        "create a model version": ("model-versions/create", {"name": NAME, "source": version.source,
                                                             "run_id": run.info.run_id}),
        "move an alias": ("registered-models/alias", {"name": NAME, "alias": "champion", "version": version.version}),
    }
    refused = {what: requests.post(f"{api}/{path}", json=body, auth=READER, timeout=10).status_code
               for what, (path, body) in writes.items()}
    assert refused == dict.fromkeys(writes, 403)
    assert reader.get_model_version_by_alias(NAME, "champion").version == version.version  # did not move

    again = provision(auth_server, ADMIN, WRITER, READER, experiments=(NAME,), registered_models=(NAME,))
    assert not again["writer"]["created"] and not again["reader"]["created"]  # idempotent: safe to re-run
