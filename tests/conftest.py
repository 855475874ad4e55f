"""Shared fixtures: one real Tansu broker, one MLflow server and one moto S3 server for the whole test session.

Tests share the broker but never a topic: ``make_pipeline`` writes a copy of the reference spec
with topic names unique to the test, so runs stay independent without paying for a broker each.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from ctloop.config.settings import Settings, load_settings
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SPEC = ROOT / "pipelines" / "fraud.yaml"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu), started through the same code as `ctloop stack up`."""
    state = tmp_path_factory.mktemp("broker-state")
    settings = load_settings(state_dir=state, broker_port=free_port())
    stack = Stack(settings, ["broker"])
    stack.up(timeout_s=60)
    yield f"127.0.0.1:{settings.broker_port}"
    stack.down()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server: no real AWS can be reached from the test machines, so S3 is emulated."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, local artifacts) started like `ctloop stack up` does."""
    state = tmp_path_factory.mktemp("mlflow-state")
    settings = load_settings(state_dir=state, mlflow_port=free_port())
    stack = Stack(settings, ["mlflow"])
    stack.up(timeout_s=120)
    yield settings.mlflow_tracking_uri
    stack.down()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database on the Postgres server at 127.0.0.1:5432 (trust auth), dropped afterwards; its URI."""
    import psycopg2

    database = f"ctloop_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


@pytest.fixture(autouse=True, scope="session")
def _aws_test_credentials() -> None:
    # moto accepts any credentials; never let a developer's real ones near a test
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)


def make_pipeline(directory: Path, *, name: str = "fraud", **overrides: object) -> tuple[Path, str]:
    """Copy the reference spec with unique topic names; ``overrides`` patch dotted paths.

    Returns the pipelines folder and the unique suffix used in topic names.
    """
    suffix = uuid.uuid4().hex[:8]
    data = yaml.safe_load(REFERENCE_SPEC.read_text())
    data["name"] = name
    for event in data["events"].values():
        event["topic"] = f"{event['topic']}.{suffix}"
    data.setdefault("ingest", {})["consumer_group"] = f"lander-{suffix}"
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    pipelines = directory / "pipelines"
    pipelines.mkdir(parents=True, exist_ok=True)
    (pipelines / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return pipelines, suffix


def settings_for(tmp_path: Path, broker: str, pipelines: Path, **extra: object) -> Settings:
    values = {"state_dir": tmp_path / "state", "kafka_bootstrap": broker, "pipelines_dir": pipelines,
              "kafka_session_timeout_ms": 6000, "kafka_connect_timeout_s": 30, **extra}
    return load_settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as CTLOOP_* variables, for the `ctloop` command in a subprocess."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **settings.to_env()}  # to_env: secrets in clear, not "****"


def seed_recent_accepted_run(ledger: Any, pipeline: str = "fraud", hours_ago: float = 2) -> None:
    """Record a finished, accepted training run ``hours_ago`` in the retrain ``ledger`` (inside the 6h cooldown)."""
    recent = datetime.now(UTC) - timedelta(hours=hours_ago)
    request = {"pipeline": pipeline, "reason": "schedule", "requested_by": "schedule",
               "requested_at": recent.isoformat(), "source": "schedule"}
    ledger.append({"kind": "decision", "pipeline": pipeline, "run_id": "earlier", "outcome": "accepted",
                   "why": "schedule", "decided_at": recent.isoformat(), "request": request}, recent)
    ledger.append({"kind": "finished", "pipeline": pipeline, "run_id": "earlier", "outcome": "x"}, recent)


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint that records the JSON bodies POSTed to it (alert webhooks)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
