"""`ctloop stack` supervises real processes; the lake interface behaves the same on a folder and on S3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from ctloop.config.settings import load_settings
from ctloop.lake.store import LocalLake, S3Lake
from ctloop.stack.service import StackError, free_port
from ctloop.stack.supervisor import Stack


def _ctloop(env_settings: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "ctloop.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env_settings}, check=False)


def test_stack_up_is_idempotent_status_reports_and_down_stops(tmp_path: Path) -> None:
    """Broker and MLflow server (Airflow has its own lifecycle test in tests/dags)."""
    env = {"CTLOOP_STATE_DIR": str(tmp_path), "CTLOOP_BROKER_PORT": str(free_port()),
           "CTLOOP_MLFLOW_PORT": str(free_port()), "CTLOOP_STACK_SERVICES": "broker,mlflow"}
    first = _ctloop(env, "stack", "up")
    assert first.returncode == 0, first.stderr
    status = json.loads(_ctloop(env, "stack", "status", "--json").stdout)
    assert [(s["service"], s["state"]) for s in status] == [("broker", "running"), ("mlflow", "running")]
    pids = [s["pid"] for s in status]
    assert _ctloop(env, "stack", "up").returncode == 0
    assert [s["pid"] for s in json.loads(_ctloop(env, "stack", "status", "--json").stdout)] == pids  # no second copy
    assert (tmp_path / "stack" / "broker.log").exists() and (tmp_path / "stack" / "mlflow.log").exists()

    down = _ctloop(env, "stack", "down")
    assert down.returncode == 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert {s["state"] for s in json.loads(_ctloop(env, "stack", "status", "--json").stdout)} == {"stopped"}
    assert _ctloop(env, "stack", "status").returncode == 1  # scripts can test it


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = load_settings(state_dir=tmp_path, broker_port=port)
        with pytest.raises(StackError, match=f"port {port} is already taken by a process ctloop did not start; "
                                             "stop it or choose another port with CTLOOP_BROKER_PORT"):
            Stack(settings, ["broker"]).up()
        proc = _ctloop({"CTLOOP_STATE_DIR": str(tmp_path), "CTLOOP_BROKER_PORT": str(port),
                        "CTLOOP_STACK_SERVICES": "broker"}, "stack", "up")
        assert proc.returncode == 2 and "already taken" in proc.stderr


def test_a_dead_broker_is_reported_stopped_and_restarted(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, broker_port=free_port())
    stack = Stack(settings, ["broker"])
    pid = stack.up()[0]["pid"]
    psutil.Process(pid).kill()
    psutil.Process(pid).wait(10)
    assert stack.status()[0]["state"] == "stopped"
    assert stack.up()[0]["state"] == "running"
    stack.down()


@pytest.fixture(params=["file", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "file":
        return LocalLake(tmp_path / "lake")
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"lake-{tmp_path.name.lower().replace('_', '-')[:40]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return S3Lake(bucket, "prefix/x", endpoint)


def test_lake_write_read_list_delete(lake) -> None:
    lake.write("raw/a/1.parquet", b"one")
    lake.write("raw/a/1.parquet", b"uno")  # overwrite is the replay path: it must simply replace
    lake.write("raw/b/2.parquet", b"two")
    lake.write("_dlq/3.parquet", b"three")
    assert lake.read("raw/a/1.parquet") == b"uno"
    assert lake.list("raw") == ["raw/a/1.parquet", "raw/b/2.parquet"]
    assert lake.exists("raw/b/2.parquet") and not lake.exists("raw/b/9.parquet")
    lake.delete("raw/b/2.parquet")
    lake.delete("raw/b/2.parquet")  # deleting twice is fine: recovery may repeat after a crash
    assert lake.list("raw") == ["raw/a/1.parquet"]
    fs, root = lake.arrow_fs()
    with fs.open_input_stream(f"{root}/raw/a/1.parquet") as fh:
        assert fh.read() == b"uno"


def test_local_writes_leave_no_partial_files(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    lake.write("x/y.bin", b"a" * 1000)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["y.bin"]
