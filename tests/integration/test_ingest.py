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
from ctloop.ingest.announce import announce, mark_announced
from ctloop.ingest.broker import BrokerUnavailable
from ctloop.ingest.lander import land
from ctloop.lake.paths import manifest_path
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


def test_announce_reports_each_landed_batch_until_airflow_has_it(tmp_path: Path, broker: str) -> None:
    """`--announce` sums up the manifests past the cursor like a landing; only `--announced` moves the cursor."""
    spec, settings = _setup(tmp_path, broker)
    lake = open_lake(settings)
    produce(spec, settings, events=3000, seed=SEED, bad_fraction=0.02)
    first = land(spec, settings, lake, "until_caught_up")

    told = announce(lake, spec)
    for key in ("landed", "dead_letters", "files", "manifests", "interval"):
        assert told[key] == first[key], key
    assert told["cursor_moved"] is False and told["previous_cursor"] == {}
    assert announce(lake, spec)["cursor"] == told["cursor"]  # a retried run announces the same batches again

    env = settings_env(settings)
    cli = [sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", "fraud"]
    marked = subprocess.run([*cli, "--announced", json.dumps(told["cursor"])], env=env, capture_output=True,
                            text=True, timeout=120)
    assert marked.returncode == 0, marked.stderr
    assert json.loads(marked.stdout)["moved"] == sorted(told["cursor"])
    nothing = subprocess.run([*cli, "--announce"], env=env, capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 0, nothing.stderr
    quiet = json.loads(nothing.stdout)
    assert [quiet[k] for k in ("landed", "dead_letters", "files", "manifests", "interval")] == [0, 0, 0, 0, None]
    assert mark_announced(lake, spec, {k: v - 1 for k, v in told["cursor"].items()})["moved"] == []  # never back

    produce(spec, settings, events=1000, seed=SEED + 1)
    second = land(spec, settings, lake, "until_caught_up")
    again = announce(lake, spec)
    assert (again["landed"], again["interval"], again["previous_cursor"]) == \
        (second["landed"], second["interval"], told["cursor"])

    bad = subprocess.run([*cli, "--announced", '{"no-such-topic:0": 1}'], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--announced: expected" in bad.stderr


def test_announce_moves_the_cursor_itself_past_dead_letters_only(tmp_path: Path) -> None:
    """No raw rows, no raw asset event to wait for: the next run must not report the same dead letters."""
    pipelines, _ = make_pipeline(tmp_path)
    spec = load_spec("fraud", pipelines)
    lake = LocalLake(tmp_path / "lake")
    topic = spec.events["transactions"].topic
    manifest = {"topic": topic, "partition": 1, "first_offset": 40, "last_offset": 49, "rows": 0, "dead_letters": 10,
                "files": [{"kind": "dead_letter", "rows": 10, "path": "x"}], "partitions_touched": []}
    lake.write(manifest_path("fraud", topic, 1, 40), json.dumps(manifest).encode())
    told = announce(lake, spec)
    assert (told["landed"], told["dead_letters"], told["interval"], told["cursor_moved"]) == (0, 10, None, True)
    assert announce(lake, spec)["manifests"] == 0


def test_follow_all_lands_every_pipeline_and_stops_with_any_lander(tmp_path: Path, broker: str) -> None:
    """`ingest --all --follow`: one supervised lander per spec, their metrics on one port; SIGTERM stops all
    cleanly, and one lander dying stops the others with a non-zero exit (Kubernetes restarts the pod)."""
    import urllib.request

    import psutil

    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 1, "ingest.flush_records": 1500})
    make_pipeline(tmp_path, name="second", **{"simulator.params.days": 1, "ingest.flush_records": 1500})
    port = free_port()
    settings = settings_for(tmp_path, broker, pipelines)
    env = {**settings_env(settings), "CTLOOP_METRICS_PORT": str(port)}
    specs = [load_spec(name, pipelines) for name in ("fraud", "second")]
    produced = {s.name: produce(s, settings, events=800, seed=SEED)["messages"] for s in specs}
    cmd = [sys.executable, "-m", "ctloop.cli", "ingest", "--all", "--follow"]

    def landed_by_pipeline() -> dict[str, float]:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return {}
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("ctloop_lander_events_total{"):
                name = line.split('pipeline="', 1)[1].split('"', 1)[0]
                counts[name] = counts.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return counts

    supervisor = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while landed_by_pipeline() != produced and time.monotonic() < deadline:
            assert supervisor.poll() is None, supervisor.communicate()[1][-3000:]
            time.sleep(0.5)
        assert landed_by_pipeline() == produced
        landers = psutil.Process(supervisor.pid).children()
        assert len(landers) == 2
        supervisor.terminate()
        out, err = supervisor.communicate(timeout=90)
        assert supervisor.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["exit_codes"] == {"fraud": 0, "second": 0}
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in landers)
        for spec in specs:
            expected = list(load_simulator(spec, SEED).messages(800))
            assert_exactly_once(open_lake(settings), spec.name, expected,
                                {e.topic: e.id_field for e in spec.events.values()})

        supervisor = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(psutil.Process(supervisor.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first, other = psutil.Process(supervisor.pid).children()
        first.kill()
        out, err = supervisor.communicate(timeout=90)
        assert supervisor.returncode == 1, err[-3000:]
        assert "stopping the others" in err
        assert not (other.is_running() and other.status() != psutil.STATUS_ZOMBIE)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
