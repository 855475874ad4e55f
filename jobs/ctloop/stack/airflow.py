"""Airflow in the ``local`` runtime: api-server, scheduler, dag-processor and triggerer as stack services.

``airflow_services(settings)`` only describes the processes (``ctloop stack`` builds the list for
``status`` and ``down`` too, so it must not touch the disk). Each service runs through this
module's launcher, ``python -m ctloop.stack.airflow <component>``, which prepares
``<state_dir>/airflow`` (idempotently: the login, the shared JWT/Fernet secrets, and for the
api-server, the first to start, ``airflow db migrate``) and then ``exec``\\ s the Airflow
command, so the stack's process group is Airflow's own and ``stack down`` reaches the LocalExecutor's
task processes too.

Login: SimpleAuthManager with one user, ``admin`` (role admin); its password is generated once
into ``<state_dir>/airflow/passwords.json`` and printed by ``ctloop stack up``. The metadata DB is
SQLite under the state dir unless ``CTLOOP_AIRFLOW_DB_URI`` names another (Postgres).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ctloop.config.settings import Settings
from ctloop.stack.service import Service

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
REPO = Path(__file__).resolve().parents[3]


def airflow_home(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "airflow"


def login(settings: Settings) -> tuple[str, str | None]:
    """The UI/REST login: (user, password), the password None until the first ``stack up``."""
    path = airflow_home(settings) / "passwords.json"
    if not path.exists():
        return ADMIN_USER, None
    return ADMIN_USER, json.loads(path.read_text()).get(ADMIN_USER)


def _get_json(url: str, timeout: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own localhost URL)
            return json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _component_healthy(settings: Settings, component: str) -> bool:
    """The api-server's health endpoint reports each component's latest heartbeat."""
    health = _get_json(f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health")
    if not health:
        return False
    if component == "api-server":
        return health.get("metadatabase", {}).get("status") == "healthy"
    key = component.replace("-", "_")
    return (health.get(key) or {}).get("status") == "healthy"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment of every Airflow component (and so of the job subprocesses its tasks start)."""
    home = airflow_home(settings)
    port = settings.airflow_port
    env = settings.to_env()  # secrets in clear: model_dump() would hand the services "**********"
    # the services run with the stack folder as their cwd: paths must be absolute
    env.update(CTLOOP_STATE_DIR=str(settings.state_dir.resolve()),
               CTLOOP_PIPELINES_DIR=str(settings.pipelines_dir.resolve()))
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # the loop runs as soon as it is up; pause a DAG in the UI to stop one stage
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_db_uri.get_secret_value(),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 3),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "PYTHONUNBUFFERED": "1",
    })
    smtp = settings.smtp_url.get_secret_value()
    if smtp:  # e-mail alerts: SmtpNotifier uses the connection smtp_default (docs/monitoring.md, "Alerts")
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = smtp
    return env


def airflow_services(settings: Settings) -> list[Service]:
    """The four Airflow services of the embedded stack, in start order (api-server migrates the DB)."""
    port = settings.airflow_port
    launcher = [sys.executable, "-m", "ctloop.stack.airflow"]
    env = airflow_env(settings)
    ui = f"http://127.0.0.1:{port}"

    def service(component: str, svc_port: int, url: str) -> Service:
        return Service(name=f"airflow-{component}", port=svc_port, command=[*launcher, component],
                       healthy=lambda: _component_healthy(settings, component), url=url, env=env,
                       port_setting="CTLOOP_AIRFLOW_PORT")

    return [
        service("api-server", port, ui),
        service("scheduler", port + 1, f"{ui} (scheduler)"),
        service("dag-processor", 0, f"{ui} (dag-processor)"),  # listens on nothing
        service("triggerer", port + 3, f"{ui} (triggerer)"),
    ]


def prepare(home: Path) -> None:
    """Create the Airflow home with a login and the secrets every component must share (idempotent)."""
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    if not passwords.exists():
        _write_private(passwords, json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
    keys = home / "secrets.json"
    if not keys.exists():
        from cryptography.fernet import Fernet

        _write_private(keys, json.dumps({"jwt_secret": secrets.token_urlsafe(32),
                                         "secret_key": secrets.token_urlsafe(32),
                                         "fernet_key": Fernet.generate_key().decode()}))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def launch(component: str) -> None:
    """Entry point of each service: prepare, migrate (api-server) and ``exec`` Airflow."""
    if component not in COMPONENTS:
        raise SystemExit(f"usage: python -m ctloop.stack.airflow {{{','.join(COMPONENTS)}}}")
    home = Path(os.environ["AIRFLOW_HOME"])
    prepare(home)
    keys = json.loads((home / "secrets.json").read_text())
    os.environ.update(AIRFLOW__API_AUTH__JWT_SECRET=keys["jwt_secret"], AIRFLOW__API__SECRET_KEY=keys["secret_key"],
                      AIRFLOW__CORE__FERNET_KEY=keys["fernet_key"])
    airflow = str(Path(sys.executable).parent / "airflow")
    if component == "api-server":
        print("[ctloop] airflow db migrate", flush=True)
        subprocess.run([airflow, "db", "migrate"], check=True)
    os.execv(airflow, [airflow, component])


if __name__ == "__main__":
    launch(sys.argv[1] if len(sys.argv) > 1 else "")
