"""Settings that can hold a password are never shown; the processes that connect still get the real value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ctloop.config.settings import SECRET_SETTINGS, Settings, SettingsError, load_settings
from pydantic import SecretStr, ValidationError

PASSWORD = "hunter2-S3cr3t"
SECRETS = {
    "feast_redis": f"redis.internal:6379,ssl=true,password={PASSWORD}",
    "mlflow_backend_store_uri": f"postgresql+psycopg2://mlflow:{PASSWORD}@db.internal:5432/mlflow",
    "airflow_db_uri": f"postgresql+psycopg2://airflow:{PASSWORD}@db.internal:5432/airflow",
    "serving_token": PASSWORD,
    "smtp_url": f"smtp://alerts:{PASSWORD}@mail.internal:587?from_email=ctloop%40example.com",
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(state_dir=tmp_path, **SECRETS)


def test_the_secret_settings_are_secret_str() -> None:
    assert set(SECRETS) == SECRET_SETTINGS
    for name in SECRET_SETTINGS:
        assert Settings.model_fields[name].annotation is SecretStr, name


def test_repr_str_and_dumps_never_show_a_password(settings: Settings) -> None:
    assert settings.feast_redis.get_secret_value() == SECRETS["feast_redis"]  # the value is there, only hidden
    for shown in (repr(settings), str(settings), f"{settings}", settings.model_dump_json(), str(settings.model_dump()),
                  json.dumps(settings.model_dump(mode="json"))):
        assert PASSWORD not in shown
        assert "**********" in shown


def test_errors_never_show_a_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = f"redis.internal,password={PASSWORD}"  # no port
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path, feast_redis=bad)
    assert "CTLOOP_FEAST_REDIS: Value error, expected host:port[,option=value...]" in str(err.value)
    assert PASSWORD not in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path, airflow_db_uri=[PASSWORD])  # not even a string: pydantic's own error
    assert "CTLOOP_AIRFLOW_DB_URI: Input should be a valid string" in str(err.value)
    assert PASSWORD not in str(err.value)
    with pytest.raises(ValidationError) as raw:  # building Settings directly: pydantic's message hides inputs
        Settings(state_dir=tmp_path, feast_redis=bad)
    assert PASSWORD not in str(raw.value) and PASSWORD not in repr(raw.value)
    # another setting at fault, secrets set next to it
    monkeypatch.setenv("CTLOOP_RUNTIME", "k8s")
    monkeypatch.setenv("CTLOOP_AIRFLOW_DB_URI", SECRETS["airflow_db_uri"])
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path)
    assert "CTLOOP_RUNTIME" in str(err.value) and PASSWORD not in str(err.value)


def test_the_cli_never_prints_a_password(tmp_path: Path) -> None:
    env = {**os.environ, "CTLOOP_STATE_DIR": str(tmp_path), "CTLOOP_STACK_SERVICES": "mlflow,airflow",
           **{f"CTLOOP_{name.upper()}": value for name, value in SECRETS.items()}}
    status = subprocess.run([sys.executable, "-m", "ctloop.cli", "stack", "status", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 1, status.stderr  # nothing is running: scripts can test that
    assert {row["state"] for row in json.loads(status.stdout)} == {"stopped"}
    bad = subprocess.run([sys.executable, "-m", "ctloop.cli", "stack", "status", "--json"],
                         env={**env, "CTLOOP_FEAST_REDIS": f"redis.internal,password={PASSWORD}"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "CTLOOP_FEAST_REDIS" in bad.stderr
    for proc in (status, bad):
        assert PASSWORD not in proc.stdout + proc.stderr


def test_the_processes_that_connect_get_the_real_values(settings: Settings) -> None:
    from ctloop.stack.airflow import airflow_env
    from ctloop.stack.services import mlflow_service

    env = airflow_env(settings)  # the Airflow services, and through them every job subprocess
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == SECRETS["airflow_db_uri"]
    for name, value in SECRETS.items():
        assert env[f"CTLOOP_{name.upper()}"] == value
    assert "**********" not in "".join(env.values())
    # a process reading that environment gets the same settings back
    again = Settings.model_validate({k.removeprefix("CTLOOP_").lower(): v for k, v in env.items()
                                     if k.startswith("CTLOOP_")})
    assert {n: getattr(again, n).get_secret_value() for n in SECRETS} == SECRETS

    command = mlflow_service(settings).command
    assert command[command.index("--backend-store-uri") + 1] == SECRETS["mlflow_backend_store_uri"]


def test_feast_gets_the_real_redis_connection(settings: Settings) -> None:
    from ctloop.features.store import repo_config  # imports Feast (~6 s)

    redis = Settings.model_validate({**settings.model_dump(), "feast_online_store": "redis"})  # SecretStr kept
    assert repo_config(redis).online_store.connection_string == SECRETS["feast_redis"]
