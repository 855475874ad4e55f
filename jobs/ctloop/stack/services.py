"""The services of the embedded stack: the Tansu broker, MLflow, Airflow's four components and the traffic switch."""

from __future__ import annotations

import sys
from pathlib import Path

from ctloop.config.settings import Settings
from ctloop.stack.airflow import airflow_services
from ctloop.stack.service import Service, http_healthy, kafka_healthy, tansu_binary


def mlflow_service(settings: Settings) -> Service:
    """MLflow tracking server and model registry, serving artifacts itself (clients need no store access)."""
    port = settings.mlflow_port
    artifacts = settings.mlflow_artifacts_destination
    backend = settings.mlflow_backend_store_uri.get_secret_value()

    def prepare() -> None:
        if "://" not in artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
        if backend.startswith("sqlite:///"):
            Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    return Service(
        name="mlflow",
        port=port,
        command=[str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1", "--backend-store-uri", backend, "--artifacts-destination", artifacts],
        healthy=lambda: http_healthy(f"http://127.0.0.1:{port}/health"),
        url=f"http://127.0.0.1:{port}",
        # no GenAI job runner: ctloop uses none of its jobs, and it starts ~10 huey processes (~0.8 GB)
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
             **({"MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url} if settings.s3_endpoint_url else {})},
        port_setting="CTLOOP_MLFLOW_PORT",
        prepare=prepare,
    )


def serving_service(settings: Settings) -> Service:
    """The traffic switch on ``CTLOOP_SERVING_PORT`` (``ctloop serve switch``), which runs the blue and green
    slots as its children and serves the champion of each pipeline with nothing live yet (docs/deploy.md).

    Healthy once it answers and no slot is still loading (``/healthz``), so ``stack up`` returns with the
    champion served. ``prepare`` creates the serving token file once (mode 0600), shared with the slots."""
    port = settings.serving_port
    env = settings.to_env()  # secrets in clear, for the switch and the slots it starts
    # the services run with the stack folder as their cwd: paths must be absolute
    env.update(CTLOOP_STATE_DIR=str(settings.state_dir.resolve()),
               CTLOOP_PIPELINES_DIR=str(settings.pipelines_dir.resolve()), PYTHONUNBUFFERED="1")
    if settings.serving_token_file is not None:
        env["CTLOOP_SERVING_TOKEN_FILE"] = str(settings.serving_token_file.resolve())

    def prepare() -> None:
        from ctloop.serving.auth import ensure_token

        ensure_token(settings)

    return Service(
        name="serving-switch",
        port=port,
        command=[sys.executable, "-m", "ctloop.cli", "serve", "switch"],
        healthy=lambda: http_healthy(f"http://127.0.0.1:{port}/healthz"),
        url=f"http://127.0.0.1:{port}",
        env=env,
        port_setting="CTLOOP_SERVING_PORT",
        prepare=prepare,
    )


def services(settings: Settings) -> list[Service]:
    """The services of the embedded stack, in start order."""
    port = settings.broker_port
    listener = f"tcp://127.0.0.1:{port}"
    broker = Service(
        name="broker",
        port=port,
        command=[str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                 "--storage-engine", "memory://tansu/"],
        healthy=lambda: kafka_healthy(f"127.0.0.1:{port}"),
        url=f"kafka://127.0.0.1:{port}",
        port_setting="CTLOOP_BROKER_PORT",
    )
    return [broker, mlflow_service(settings), *airflow_services(settings), serving_service(settings)]
