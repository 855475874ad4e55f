"""Exactly-once landing under SIGKILL: the lander dies at random moments and nothing is lost or doubled.

``_chaos`` also runs several landers in one group and pauses them (tests/integration/test_lander_fencing.py).

Real Tansu broker, real `ctloop` processes killed with SIGKILL; the lake is checked by event id
against the simulator's ground truth (same seed, recomputed without Kafka). The S3 variant runs
against moto_server, since no real S3 is reachable from the test machines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ctloop.config.spec import load_spec
from ctloop.lake.paths import manifest_prefix
from ctloop.lake.store import Lake, open_lake
from ctloop.sim.simulator import load_simulator

from tests.conftest import make_pipeline, settings_env, settings_for
from tests.lakecheck import assert_exactly_once

CTLOOP = [sys.executable, "-m", "ctloop.cli"]


def _start(env: dict[str, str], logs: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`ingest --follow` in its own process group (SIGSTOP can freeze it with its writer process), one log per start."""
    log_path = logs / f"{name}-{len(list(logs.glob(f'{name}-*.log')))}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(CTLOOP + ["ingest", "--pipeline", "fraud", "--follow"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log_path


def _wait_for(log_path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        time.sleep(0.05)


def assert_manifests_partition_the_offsets(lake: Lake, pipeline: str) -> None:
    """Every offset of every partition is in exactly one manifest (no batch twice, none overlapping, no gap),
    and the manifests count every record once, as a row or a dead letter: what `ingest --announce` reads."""
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for path in lake.list(f"{manifest_prefix(pipeline)}/"):
        m = json.loads(lake.read(path))
        spans.setdefault(f"{m['topic']}:{m['partition']}", []).append(
            (m["first_offset"], m["last_offset"], m["rows"] + m["dead_letters"]))
    assert spans
    for key, ranges in spans.items():
        ranges.sort()
        assert ranges[0][0] == 0, (key, ranges[:3])
        for (_, last, _), (first, _, _) in zip(ranges, ranges[1:], strict=False):
            assert first == last + 1, f"{key}: manifests overlap or leave a gap at {last}..{first}"
        assert sum(n for *_, n in ranges) == ranges[-1][1] + 1, key


def _chaos(tmp_path: Path, broker: str, *, events: int, kills: int, pauses: int = 0, landers: int = 1,
           lake_uri: str | None = None, s3_endpoint: str | None = None, seed: int = 11,
           session_timeout_ms: int | None = None, flush_records: int = 3000, days: int = 3,
           seconds: float = 25) -> dict[str, int]:
    """``landers`` landers in one group while ``events`` are produced over about ``seconds``: at random moments
    one is SIGKILLed (and restarted) or, ``pauses`` times, SIGSTOPped past the session timeout (with its writer
    process or without) and resumed. Then a final ``--until-caught-up``, and the lake is checked."""
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": days, "ingest.flush_records": flush_records,
                                              "ingest.rotate_interval_s": 1800})
    extra: dict[str, object] = {"lake_uri": lake_uri} if lake_uri else {}
    if s3_endpoint:
        extra["s3_endpoint_url"] = s3_endpoint
    if session_timeout_ms:
        extra["kafka_session_timeout_ms"] = session_timeout_ms
    settings = settings_for(tmp_path, broker, pipelines, **extra)
    env = settings_env(settings)
    spec = load_spec("fraud", pipelines)
    rng = random.Random(seed)

    producer = subprocess.Popen(
        CTLOOP + ["produce", "--pipeline", "fraud", "--events", str(events), "--rate", str(events / seconds),
                  "--seed", str(seed), "--bad-fraction", "0.02"], env=env, stdout=subprocess.DEVNULL)
    logs = tmp_path / "lander-logs"
    logs.mkdir()
    names = "abcdefgh"[:landers]
    running = {name: _start(env, logs, name) for name in names}
    killed = paused = 0
    try:
        while killed < kills or paused < pauses or producer.poll() is None:
            name = rng.choice(names)
            proc, log_path = running[name]
            # at a random moment once it owns partitions: mid-fetch, mid-write or mid-commit
            _wait_for(log_path, "assigned", proc)
            time.sleep(rng.uniform(0.0, 4.0) if landers == 1 else rng.uniform(0.5, 2.5))
            assert proc.poll() is None, log_path.read_text(errors="replace")
            if paused < pauses and (killed >= kills or rng.random() < 0.7):
                # past the session timeout: another lander takes over, recovers and lands before this one resumes
                pid = -proc.pid if rng.random() < 0.6 else proc.pid  # negative: the whole process group
                os.kill(pid, signal.SIGSTOP)
                time.sleep(settings.kafka_session_timeout_ms / 1000 * rng.uniform(1.7, 3.0))
                os.kill(pid, signal.SIGCONT)
                paused += 1
                continue
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
            running[name] = _start(env, logs, name)
        assert producer.wait() == 0
        for proc, _ in running.values():
            # SIGKILL, not SIGTERM: with several members, Tansu (the test broker) can keep one that left the group
            # cleanly as a member forever, and the group never settles again; a killed one expires with its session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
        for proc, _ in running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    final = subprocess.run(CTLOOP + ["ingest", "--pipeline", "fraud", "--until-caught-up"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    text = "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))

    expected = list(load_simulator(spec, seed).messages(events, bad_fraction=0.02))
    ids = {e.topic: e.id_field for e in spec.events.values()}
    lake = open_lake(settings)
    figures = assert_exactly_once(lake, "fraud", expected, ids)
    assert_manifests_partition_the_offsets(lake, "fraud")
    figures.update(kills=killed, pauses=paused, recoveries=text.count("uncommitted objects"),
                   stale=text.count("dropping uncommitted work"), fenced_writes=text.count("fenced by epoch"),
                   refused_commits=text.count("offset commit refused"))
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
