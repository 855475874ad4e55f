"""Landing against the real Tansu broker: layout, manifests, replays, restarts and a broker that is down."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.broker import BrokerUnavailable
from ctloop.ingest.lander import land
from ctloop.lake.store import LocalLake, open_lake
from ctloop.sim.producer import produce
from ctloop.sim.simulator import load_simulator
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack

from tests.conftest import make_pipeline, settings_env, settings_for
from tests.lakecheck import assert_exactly_once

SEED = 5


def _setup(tmp_path: Path, broker: str, **spec_overrides: object):
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 2, "ingest.flush_records": 1500,
                                              "ingest.rotate_interval_s": 3600, **spec_overrides})
    settings = settings_for(tmp_path, broker, pipelines)
    return load_spec("fraud", pipelines), settings


def test_lands_layout_manifests_and_dead_letters(tmp_path: Path, broker: str) -> None:
    spec, settings = _setup(tmp_path, broker)
    produced = produce(spec, settings, events=6000, seed=SEED, bad_fraction=0.03)
    summary = land(spec, settings, open_lake(settings), "until_caught_up")
    expected = list(load_simulator(spec, SEED).messages(6000, bad_fraction=0.03))
    lake = open_lake(settings)
    assert_exactly_once(lake, "fraud", expected, {e.topic: e.id_field for e in spec.events.values()})
    assert summary["consumed"] == produced["messages"]
    assert summary["landed"] + summary["dead_letters"] == produced["messages"]

    topic = spec.events["transactions"].topic
    raw_files = [p for p in lake.list(f"raw/fraud/{topic}") if p.endswith(".parquet")]
    for path in raw_files:
        *_, date, hour, name = path.split("/")
        assert date.startswith("event_date=") and hour.startswith("event_hour=")
        part, first = name.removesuffix(".parquet").split("+")[1:]
        table = pq.read_table(io.BytesIO(lake.read(path)))
        assert table.column("_kafka_offset")[0].as_py() == int(first)  # named by its first offset
        assert set(table.column("_kafka_partition").to_pylist()) == {int(part)}
        hours = {t.strftime("%Y-%m-%d/%H") for t in table.column("event_time").to_pylist()}
        assert hours == {f"{date.split('=')[1]}/{hour.split('=')[1]}"}  # rows sit in their event hour

    manifests = [json.loads(lake.read(p)) for p in lake.list("_manifests/fraud")]
    assert sum(m["rows"] for m in manifests) == summary["landed"]
    assert sum(m["dead_letters"] for m in manifests) == summary["dead_letters"]
    listed = {f["path"] for m in manifests for f in m["files"]}
    assert listed == {p for p in lake.list("raw/fraud") + lake.list("_dlq/fraud")}
    for m in manifests:
        assert m["partitions_touched"] and m["first_offset"] <= m["last_offset"]
    # the event-time interval Airflow's asset event carries: whole hours covering every raw partition
    touched = sorted({"/".join(p.split("/")[3:5]) for p in lake.list("raw/fraud")})
    start, end = summary["interval"]
    assert start == datetime.strptime(touched[0], "event_date=%Y-%m-%d/event_hour=%H").replace(tzinfo=UTC).isoformat()
    last = datetime.strptime(touched[-1], "event_date=%Y-%m-%d/event_hour=%H").replace(tzinfo=UTC)
    assert end == (last + timedelta(hours=1)).isoformat()


def test_rerun_is_a_no_op_and_replay_writes_the_same_files(tmp_path: Path, broker: str) -> None:
    spec, settings = _setup(tmp_path, broker)
    produce(spec, settings, events=5000, seed=SEED, bad_fraction=0.02)
    lake = open_lake(settings)
    land(spec, settings, lake, "until_caught_up")
    before = {p: lake.read(p) for p in lake.list("raw") + lake.list("_dlq")}

    again = land(spec, settings, lake, "until_caught_up")
    assert again["consumed"] == 0 and again["files"] == 0 and again["interval"] is None
    assert {p: lake.read(p) for p in lake.list("raw") + lake.list("_dlq")} == before

    # a replay from offset 0 by a fresh group into a second lake produces the same files
    replay_group = spec.ingest.model_copy(update={"consumer_group": "replay-" + spec.ingest.consumer_group})
    replay_spec = spec.model_copy(update={"ingest": replay_group})
    lake2 = LocalLake(tmp_path / "lake2")
    land(replay_spec, settings, lake2, "until_caught_up")
    after = {p: lake2.read(p) for p in lake2.list("raw") + lake2.list("_dlq")}
    assert after.keys() == before.keys()
    for path in before:
        assert pq.read_table(io.BytesIO(after[path])).equals(pq.read_table(io.BytesIO(before[path]))), path


def test_rotation_by_size_and_by_record_time(tmp_path: Path, broker: str) -> None:
    spec, settings = _setup(tmp_path, broker, **{"ingest.flush_records": 200, "ingest.rotate_interval_s": 600})
    produce(spec, settings, events=3000, seed=SEED)
    land(spec, settings, open_lake(settings), "until_caught_up")
    lake = open_lake(settings)
    for path in lake.list("_manifests/fraud"):
        manifest = json.loads(lake.read(path))
        for f in manifest["files"]:
            if f["kind"] == "raw":
                assert f["last_offset"] - f["first_offset"] < 200
                span = (pq.read_table(io.BytesIO(lake.read(f["path"]))).column("_kafka_timestamp"))
                assert (span[-1].as_py() - span[0].as_py()).total_seconds() < 600


def test_broker_down_at_start_retries_then_lands_everything(tmp_path: Path) -> None:
    """The lander starts before its broker: it says so, waits, and loses nothing once the broker is up."""
    port = free_port()
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 1})
    settings = settings_for(tmp_path, f"127.0.0.1:{port}", pipelines, broker_port=port, kafka_connect_timeout_s=120)
    env = settings_env(settings)
    log_path = tmp_path / "lander.log"
    with open(log_path, "wb") as log:
        lander = subprocess.Popen([sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", "fraud", "--follow"],
                                  env=env, stdout=subprocess.PIPE, stderr=log)
    stack = Stack(settings, ["broker"])
    try:
        deadline = time.monotonic() + 30
        while "not reachable" not in log_path.read_text() and time.monotonic() < deadline:
            assert lander.poll() is None, log_path.read_text()
            time.sleep(0.2)
        assert f"broker 127.0.0.1:{port} not reachable" in log_path.read_text()
        assert "retrying in" in log_path.read_text()
        stack.up()
        spec = load_spec("fraud", pipelines)
        produce(spec, settings, events=2000, seed=SEED, bad_fraction=0.05)
        lake = open_lake(settings)
        expected = list(load_simulator(spec, SEED).messages(2000, bad_fraction=0.05))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            manifests = [json.loads(lake.read(p)) for p in lake.list("_manifests/fraud")]
            if sum(m["rows"] + m["dead_letters"] for m in manifests) >= len(expected):
                break
            time.sleep(1)
        lander.terminate()  # SIGTERM: flush, commit, print the summary
        out, _ = lander.communicate(timeout=60)
        assert lander.returncode == 0, log_path.read_text()
        assert json.loads(out)["mode"] == "follow"
        assert_exactly_once(lake, "fraud", expected, {e.topic: e.id_field for e in spec.events.values()})
    finally:
        if lander.poll() is None:
            lander.kill()
        stack.down()


def test_broker_that_never_comes_is_a_clear_error(tmp_path: Path) -> None:
    pipelines, _ = make_pipeline(tmp_path)
    settings = settings_for(tmp_path, f"127.0.0.1:{free_port()}", pipelines, kafka_connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match=r"no Kafka broker reachable at 127\.0\.0\.1:\d+ after \d+ attempts"):
        land(load_spec("fraud", pipelines), settings, open_lake(settings), "until_caught_up")
    env = settings_env(settings)
    proc = subprocess.run([sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", "fraud", "--until-caught-up"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "ctloop ingest: error: topics: no Kafka broker reachable" in proc.stderr


def test_follow_serves_prometheus_metrics(tmp_path: Path, broker: str) -> None:
    """The names and labels the Grafana dashboard and the Kubernetes probes rely on."""
    import urllib.request

    port = free_port()
    spec, settings = _setup(tmp_path, broker)
    env = {**settings_env(settings), "CTLOOP_METRICS_PORT": str(port)}
    produced = produce(spec, settings, events=1500, seed=SEED, bad_fraction=0.05)
    lander = subprocess.Popen([sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", "fraud", "--follow"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, text = time.monotonic() + 90, ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                text = ""
            landed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("ctloop_lander_events_total{"))
            if landed >= produced["messages"]:
                break
            time.sleep(0.5)
        assert 'ctloop_lander_events_total{outcome="landed",pipeline="fraud"}' in text, text
        assert 'ctloop_lander_events_total{outcome="dead_letter",pipeline="fraud"}' in text
        assert landed == produced["messages"]
        assert 'ctloop_lander_last_landed_timestamp_seconds{pipeline="fraud"}' in text
        assert "ctloop_lander_consumer_lag" in text
    finally:
        lander.terminate()
        lander.wait(60)
