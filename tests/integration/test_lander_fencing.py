"""Fencing: two landers share a consumer group while one is paused past its session timeout or killed.

A lander paused with SIGSTOP (its writer process too, or only its consumer) longer than
``CTLOOP_KAFKA_SESSION_TIMEOUT_MS`` loses its partitions to the other lander, which claims them in
the lake, adopts what the paused one left uncommitted and lands on. When the paused one resumes
(SIGCONT) it is stale: Kafka refuses its offset commits, and its writer sees the newer claim and
writes nothing, or finishes a batch the new owner adopted and rewrote with the same segments. SIGKILLs
add crashes mid-write. At the end every event is in the lake exactly once (by event id, against the
simulator's ground truth), and every offset is in exactly one manifest (what ``--announce`` reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.lander import Segment, SegmentWriter
from ctloop.lake.paths import batch_intent_path, claim_path, manifest_path
from ctloop.lake.store import LocalLake
from ctloop.sim.simulator import load_simulator
from kafka import TopicPartition

from tests.conftest import make_pipeline
from tests.integration.test_chaos import _chaos


@pytest.mark.slow
def test_paused_and_killed_landers_in_one_group_land_every_event_once(tmp_path: Path, broker: str) -> None:
    figures = _chaos(tmp_path, broker, events=24_000, kills=2, pauses=5, landers=2, seed=7, session_timeout_ms=3000,
                     flush_records=400, days=2, seconds=45)
    assert figures["pauses"] >= 5 and figures["kills"] >= 2
    # a resumed lander found its partitions gone or fenced: the test did exercise a stale member
    assert figures["stale"] >= 1, figures


def _segment(tp: TopicPartition, messages: list, first: int) -> Segment:
    segment = Segment(tp, first, messages[0].timestamp_ms)
    for offset, m in enumerate(messages, start=first):
        segment.offsets.append(offset)
        segment.timestamps.append(m.timestamp_ms)
        segment.keys.append(m.key)
        segment.values.append(m.value)
    return segment


def test_a_stale_writer_writes_nothing_once_a_newer_owner_claimed_the_partition(tmp_path: Path) -> None:
    """The check-and-write of a batch: intent created first, claims listed second. Behind a newer claim the
    old owner's writer leaves no file, no manifest and no intent; the new owner adopts what was there before."""
    pipelines, _ = make_pipeline(tmp_path)
    spec = load_spec("fraud", pipelines)
    lake = LocalLake(tmp_path / "lake")
    topic = spec.events["transactions"].topic
    tp = TopicPartition(topic, 0)
    messages = [m for m in load_simulator(spec, 3).messages(200) if m.topic == topic][:40]
    writer = SegmentWriter(spec, lake)
    old = {"epoch": 1, "generation": 3, "member_id": "old-member"}
    assert lake.create(claim_path("fraud", topic, 0, 1), json.dumps(old).encode())

    landed = writer.write_partition(tp, [_segment(tp, messages[:20], 0)], old)
    assert landed.fenced_by is None and landed.rows == 20
    assert lake.exists(manifest_path("fraud", topic, 0, 0))

    new = {"epoch": 2, "generation": 4, "member_id": "new-member"}
    assert lake.create(claim_path("fraud", topic, 0, 2), json.dumps(new).encode())
    before = set(lake.list(""))
    stale = writer.write_partition(tp, [_segment(tp, messages[20:], 20)], old)
    assert stale.fenced_by is not None and stale.fenced_by["member_id"] == "new-member"
    assert (stale.rows, stale.files) == (0, [])
    assert set(lake.list("")) == before  # not even its intent is left
    assert not lake.exists(batch_intent_path("fraud", topic, 0, 1, 20))
    # the first batch's intent stays until a later batch of the partition commits: the claims say who owns it
    assert lake.exists(batch_intent_path("fraud", topic, 0, 1, 0))
