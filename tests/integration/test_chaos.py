"""Exactly-once landing under SIGKILL: the lander dies at random moments and nothing is lost or doubled.

Real Tansu broker, real `ctloop` processes killed with SIGKILL; the lake is checked by event id
against the simulator's ground truth (same seed, recomputed without Kafka). The S3 variant runs
against moto_server, since no real S3 is reachable from the test machines.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ctloop.config.spec import load_spec
from ctloop.lake.store import open_lake
from ctloop.sim.simulator import load_simulator

from tests.conftest import make_pipeline, settings_env, settings_for
from tests.lakecheck import assert_exactly_once

CTLOOP = [sys.executable, "-m", "ctloop.cli"]


def _chaos(tmp_path: Path, broker: str, *, events: int, kills: int, lake_uri: str | None = None,
           s3_endpoint: str | None = None, seed: int = 11) -> dict[str, int]:
    pipelines, _ = make_pipeline(
        tmp_path, **{"simulator.params.days": 3, "ingest.flush_records": 3000, "ingest.rotate_interval_s": 1800})
    extra = {"lake_uri": lake_uri} if lake_uri else {}
    if s3_endpoint:
        extra["s3_endpoint_url"] = s3_endpoint
    settings = settings_for(tmp_path, broker, pipelines, **extra)
    env = settings_env(settings)
    spec = load_spec("fraud", pipelines)
    rng = random.Random(seed)

    producer = subprocess.Popen(
        CTLOOP + ["produce", "--pipeline", "fraud", "--events", str(events), "--rate", str(events / 25),
                  "--seed", str(seed), "--bad-fraction", "0.02"], env=env, stdout=subprocess.DEVNULL)
    logs = tmp_path / "lander-logs"
    logs.mkdir()
    killed = 0
    while killed < kills or producer.poll() is None:
        log_path = logs / f"run-{killed}.log"
        with open(log_path, "wb") as log:
            lander = subprocess.Popen(CTLOOP + ["ingest", "--pipeline", "fraud", "--follow"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
            # kill at a random moment once it owns partitions: mid-fetch, mid-write or mid-commit
            deadline = time.monotonic() + 60
            while b"assigned" not in log_path.read_bytes() and time.monotonic() < deadline:
                assert lander.poll() is None, log_path.read_text()
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 4.0))
            assert lander.poll() is None, log_path.read_text()
            lander.send_signal(signal.SIGKILL)
            lander.wait()
        killed += 1
    assert producer.wait() == 0

    final = subprocess.run(CTLOOP + ["ingest", "--pipeline", "fraud", "--until-caught-up"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    recovered = sum((logs / f"run-{i}.log").read_text().count("uncommitted objects") for i in range(killed))

    expected = list(load_simulator(spec, seed).messages(events, bad_fraction=0.02))
    ids = {e.topic: e.id_field for e in spec.events.values()}
    figures = assert_exactly_once(open_lake(settings), "fraud", expected, ids)
    figures.update(kills=killed, recoveries=recovered)
    print(figures)
    return figures


@pytest.mark.slow
def test_sigkill_loop_keeps_every_event_exactly_once(tmp_path: Path, broker: str) -> None:
    figures = _chaos(tmp_path, broker, events=100_000, kills=10)
    assert figures["kills"] >= 10
    # the kills must really have landed mid-write: some run left uncommitted files that a later one removed
    assert figures["recoveries"] >= 1, figures
    assert sum(v for k, v in figures.items() if k.endswith(":valid")) > 95_000
    assert sum(v for k, v in figures.items() if k.endswith(":bad")) > 1_500


@pytest.mark.slow
def test_sigkill_loop_on_s3(tmp_path: Path, broker: str, s3_endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="chaos-lake")
    figures = _chaos(tmp_path, broker, events=30_000, kills=10, lake_uri="s3://chaos-lake/lake",
                     s3_endpoint=s3_endpoint)
    assert figures["kills"] >= 10
    assert figures["recoveries"] >= 1, figures
