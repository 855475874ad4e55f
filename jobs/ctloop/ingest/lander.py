"""The lander: Kafka topics into the lake as Parquet, exactly once, in a consumer group.

The protocol, after Kafka Connect's S3 sink:

* Each Kafka partition accumulates a *segment* of consecutive offsets. A segment closes by size
  (records, bytes) or by record time (Kafka timestamp moves ``rotate_interval_s`` past the
  segment's first record), so a replay from the same committed offset closes it at the same place.
* A closed segment becomes one Parquet file per event hour touched, named
  ``<topic>+<partition>+<first offset>.parquet`` under ``raw/<pipeline>/<topic>/event_date=…/event_hour=…/``,
  plus one dead-letter file for its invalid messages. Rewriting a segment overwrites the same names.
* Before writing a batch (a partition's closed segments), the lander records an *intent*: its segments'
  offsets and the names it is about to write. After the files and the manifest are durable it commits
  the offsets.

Ownership is fenced in the lake, next to the intents (``_state/lander/<pipeline>/<topic>+<partition>/``):

* On every assignment the new owner *claims* the partition: it creates ``<epoch>.json`` for the next
  epoch (create-if-absent, so one owner per epoch; the claim records the consumer group's generation
  and member id), then lists the folder again.
* A batch's intent is created as ``<epoch>-<first offset>.json``; then the writer lists the folder, and
  writes nothing when a claim of a higher epoch is there: its owner has been replaced (a member that was
  paused past its session timeout, say). Kafka refuses such a member's offset commit too; the lander
  then drops its uncommitted work instead of failing.
* Either the stale writer sees the new claim, or the new owner, listing after its claim, sees the
  stale writer's intent (both create, then list). Every intent at or after the committed offset that the
  new owner sees is *adopted*: it lands those offsets again with exactly the recorded segments, so it
  writes the same files, and a stale writer finishing late rewrites them with the same rows.

So a crash, a SIGKILL, a rebalance, or a pause past the session timeout at any moment leaves every
event in the lake exactly once. Segments that end because the partition is caught up (not by size or
time) are the one place where boundaries depend on timing; adoption keeps those exact too.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from ctloop import __version__
from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.ingest.broker import client_config, connect, ensure_topics
from ctloop.ingest.events import EventCodec
from ctloop.ingest.manifests import hours_interval
from ctloop.ingest.metrics import LanderMetrics
from ctloop.lake.paths import (
    batch_intent_path,
    claim_path,
    dlq_prefix,
    hour_partition,
    intent_path,
    intents_prefix,
    manifest_path,
    raw_prefix,
)
from ctloop.lake.store import Lake

Mode = Literal["until_caught_up", "follow"]
HOUR_US = 3_600_000_000
WRITERS = 1  # writer processes: more only steal the CPU the consumer needs (measured on 2 cores)
MAX_IN_FLIGHT = 4  # partition writes under way while the consumer keeps fetching
IO_THREADS = 4  # concurrent file writes within a batch (S3 PUTs and fsyncs wait on I/O, not CPU)
DLQ_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("kafka_timestamp", pa.timestamp("ms", tz="UTC")), ("key", pa.binary()), ("value", pa.binary()),
    ("error", pa.string()),
])


def _file_name(tp: TopicPartition, first_offset: int) -> str:
    return f"{tp.topic}+{tp.partition}+{first_offset:020d}.parquet"


def consumer_config(settings: Settings, group: str, client_id: str) -> dict[str, Any]:
    """The lander's consumer settings (the ingest benchmark's bare consumer uses the same)."""
    return {
        **client_config(settings),
        "group_id": group,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(settings.kafka_session_timeout_ms // 4, 250),
        # Also the rebalance timeout: how long the group waits for a member that died in the middle of a
        # rebalance. Ten minutes stalled every lander of the group after one crash at the wrong moment; the
        # loop polls between writes, and a member too slow for this only redoes uncommitted work.
        "max_poll_interval_ms": max(settings.kafka_session_timeout_ms * 6, 30_000),
        "fetch_max_bytes": 64 * 2**20,
        "max_partition_fetch_bytes": 16 * 2**20,
    }


@dataclass(slots=True)
class Segment:
    """Consecutive offsets of one partition, kept as raw bytes until the segment is written."""

    tp: TopicPartition
    first_offset: int
    first_timestamp: int
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    nbytes: int = 0

    @property
    def last_offset(self) -> int:
        return self.offsets[-1]

    def __getstate__(self) -> tuple[Any, ...]:
        # Pickling runs on the consumer's side, the lander's bottleneck: ship flat buffers, not
        # lists of small objects (an order of magnitude cheaper).
        return (self.tp, self.first_offset, self.first_timestamp, array("q", self.offsets).tobytes(),
                array("q", self.timestamps).tobytes(), *_pack(self.keys), *_pack(self.values), self.nbytes)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.tp, self.first_offset, self.first_timestamp, offsets, timestamps,
         key_blob, key_lengths, value_blob, value_lengths, self.nbytes) = state
        self.offsets = array("q", offsets).tolist()
        self.timestamps = array("q", timestamps).tolist()
        self.keys = _unpack(key_blob, key_lengths)
        self.values = _unpack(value_blob, value_lengths)


def _pack(items: list[bytes | None]) -> tuple[bytes, bytes]:
    if None not in items:  # the common case, twice as fast
        return b"".join(items), array("q", map(len, items)).tobytes()  # type: ignore[arg-type]
    lengths = array("q", [-1 if v is None else len(v) for v in items])
    return b"".join([v for v in items if v is not None]), lengths.tobytes()


def _unpack(blob: bytes, lengths: bytes) -> list[bytes | None]:
    out: list[bytes | None] = []
    pos = 0
    for n in array("q", lengths):
        if n < 0:
            out.append(None)
        else:
            out.append(blob[pos:pos + n])
            pos += n
    return out


@dataclass(slots=True)
class Written:
    """What one batch (a partition's closed segments) put in the lake: nothing when ``fenced_by`` a newer owner."""

    rows: int
    dead_letters: int
    files: list[dict[str, Any]]
    fenced_by: dict[str, Any] | None = None


@dataclass
class Adoption:
    """Uncommitted batches of a partition's earlier owners, landed again with exactly their segments."""

    batches: deque[list[list[int]]]  # each batch: its segments' [first offset, last offset]
    done: list[Segment] = field(default_factory=list)
    open: Segment | None = None


def _intent_entries(lake: Lake, pipeline: str, tp: TopicPartition) -> list[tuple[int, int | None, str]]:
    """(epoch, first offset or None for a claim, path) of every claim and batch intent of the partition."""
    entries = []
    for path in lake.list(f"{intents_prefix(pipeline, tp.topic, tp.partition)}/"):
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        epoch, _, first = name.partition("-")
        if epoch.isdigit() and (not first or first.isdigit()):
            entries.append((int(epoch), int(first) if first else None, path))
    return entries


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    first_record: float | None = None
    finished: float | None = None  # everything landed and committed (before the consumer leaves its group)
    consumed: int = 0
    landed: int = 0
    dead_letters: int = 0
    files: int = 0
    manifests: int = 0
    adopted_batches: int = 0
    dropped_batches: int = 0  # written but never committed: fenced by a newer owner, or the commit was refused
    rebalances: int = 0
    partitions: set[str] = field(default_factory=set)
    hours: set[str] = field(default_factory=set)  # lake partitions (event hours) of committed raw files


class SegmentWriter:
    """Turns closed segments into Parquet, dead letters, an intent and a manifest (writer process)."""

    def __init__(self, spec: PipelineSpec, lake: Lake) -> None:
        self.spec = spec
        self.lake = lake
        self.codecs = {e.topic: EventCodec(e) for e in spec.events.values()}
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="lander-io")

    def write_partition(self, tp: TopicPartition, segments: list[Segment], owner: dict[str, Any]) -> Written:
        """Land one batch as the partition's ``owner`` (epoch, generation, member id): intent, files, manifest."""
        codec = self.codecs[tp.topic]
        planned: list[tuple[str, pa.Table, dict[str, Any]]] = []
        for segment in segments:
            planned.extend(self._plan_segment(codec, segment))
        first, last = segments[0].first_offset, segments[-1].last_offset
        manifest = manifest_path(self.spec.name, tp.topic, tp.partition, first)
        intent = {**owner, "first_offset": first, "last_offset": last,
                  "segments": [[s.first_offset, s.last_offset] for s in segments],
                  "paths": [p for p, _, _ in planned] + [manifest]}
        fenced = self._fence(tp, intent)
        if fenced is not None:
            return Written(0, 0, [], fenced_by=fenced)
        # Parquet encoding and fsync/PUT release the GIL: overlap them across files.
        list(self._io.map(self._write_parquet, [(path, table) for path, table, _ in planned]))
        files = [dict(info, path=path) for path, _, info in planned]
        rows = sum(f["rows"] for f in files if f["kind"] == "raw")
        dead = sum(f["rows"] for f in files if f["kind"] == "dead_letter")
        manifest_record = {
            "pipeline": self.spec.name, "spec_hash": self.spec.spec_hash, "lander_version": __version__,
            "topic": tp.topic, "partition": tp.partition, "first_offset": first, "last_offset": last,
            "rows": rows, "dead_letters": dead, "files": files,
            "partitions_touched": sorted({f["lake_partition"] for f in files if f["kind"] == "raw"}),
            "landed_at": datetime.now(UTC).isoformat(),
        }
        self.lake.write(manifest, json.dumps(manifest_record, indent=1).encode())
        return Written(rows, dead, files)

    def _fence(self, tp: TopicPartition, intent: dict[str, Any]) -> dict[str, Any] | None:
        """Create the batch's intent, then check no newer owner has claimed the partition (its claim, if one has).

        Create first, list second: a new owner claims first and lists second, so of the two, at least one
        sees the other. Older objects are collected here too: when a batch is written, every earlier batch
        of the partition is committed (one write per partition at a time, committed before the next).
        """
        epoch, first = intent["epoch"], intent["first_offset"]
        path = batch_intent_path(self.spec.name, tp.topic, tp.partition, epoch, first)
        created = self.lake.create(path, json.dumps(intent).encode())
        if not created and json.loads(self.lake.read(path)).get("segments") != intent["segments"]:
            raise RuntimeError(f"{path}: epoch {epoch} already wrote another batch from offset {first}")
        entries = _intent_entries(self.lake, self.spec.name, tp)
        newest = max((e for e, _, _ in entries), default=epoch)
        if newest > epoch:
            if created:
                self.lake.delete(path)  # nothing of it was written
            claim = claim_path(self.spec.name, tp.topic, tp.partition, newest)
            try:
                return json.loads(self.lake.read(claim))
            except Exception:  # noqa: BLE001 (only for the log: the claim may be collected meanwhile, or be a batch's)
                return {"epoch": newest}
        for e, f, p in entries:
            if (f is None and e < epoch) or (f is not None and f < first):
                self.lake.delete(p)
        return None

    def _write_parquet(self, item: tuple[str, pa.Table]) -> None:
        path, table = item
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.lake.write(path, buffer.getvalue())

    def _plan_segment(self, codec: EventCodec, segment: Segment) -> list[tuple[str, pa.Table, dict[str, Any]]]:
        tp = segment.tp
        accepted, rejected = codec.validate(segment.values)  # type: ignore[arg-type]
        planned = []
        if accepted:
            table = codec.to_table([segment.values[i] for i in accepted])  # type: ignore[misc]
            offsets = pa.array([segment.offsets[i] for i in accepted], pa.int64())
            table = table.append_column("_kafka_partition", pa.array([tp.partition] * len(accepted), pa.int32()))
            table = table.append_column("_kafka_offset", offsets)
            table = table.append_column(
                "_kafka_timestamp", pa.array([segment.timestamps[i] for i in accepted], pa.timestamp("ms", tz="UTC")))
            hours = pc.divide(table[codec.event.time_field].cast(pa.int64()), HOUR_US)
            for hour in pc.unique(hours).to_pylist():
                part = table.filter(pc.equal(hours, hour))
                start = datetime.fromtimestamp(hour * 3600, tz=UTC)
                lake_partition = hour_partition(start)
                first_offset = part["_kafka_offset"][0].as_py()
                path = f"{raw_prefix(self.spec.name, tp.topic)}/{lake_partition}/{_file_name(tp, first_offset)}"
                times = part[codec.event.time_field]
                info = {"kind": "raw", "rows": part.num_rows, "lake_partition": lake_partition,
                        "first_offset": first_offset, "last_offset": part["_kafka_offset"][-1].as_py(),
                        "min_event_time": pc.min(times).as_py().isoformat(),
                        "max_event_time": pc.max(times).as_py().isoformat(),
                        # when the events were sent: an event cannot be later than that (watermarks use it)
                        "max_kafka_time": pc.max(part["_kafka_timestamp"]).as_py().isoformat()}
                planned.append((path, part, info))
        if rejected:
            idx = [r.index for r in rejected]
            first_offset = segment.offsets[idx[0]]
            day = datetime.fromtimestamp(segment.timestamps[idx[0]] / 1000, tz=UTC)
            dlq = pa.table({
                "topic": [tp.topic] * len(idx), "partition": [tp.partition] * len(idx),
                "offset": [segment.offsets[i] for i in idx], "kafka_timestamp": [segment.timestamps[i] for i in idx],
                "key": [segment.keys[i] for i in idx], "value": [segment.values[i] for i in idx],
                "error": [r.error for r in rejected],
            }, schema=DLQ_SCHEMA)
            path = f"{dlq_prefix(self.spec.name, tp.topic)}/kafka_date={day:%Y-%m-%d}/{_file_name(tp, first_offset)}"
            planned.append((path, dlq, {"kind": "dead_letter", "rows": len(idx), "first_offset": first_offset,
                                        "last_offset": segment.offsets[idx[-1]]}))
        return planned


_WRITER: SegmentWriter | None = None


def _start_writer(spec: PipelineSpec, lake: Lake) -> None:
    """Initialise the writer process: it must never outlive the lander that feeds it."""
    global _WRITER
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent, mid-write or not
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the lander decides when to stop, then drains this process
    if os.getppid() == 1:
        os._exit(1)
    # The consumer is the bottleneck and cannot be parallelised; this process only has to keep up.
    os.nice(10)
    pa.set_cpu_count(1)
    pq.write_table(pa.table({"warm": [1]}), io.BytesIO())  # pays pyarrow's lazy imports (~1 s) up front
    _WRITER = SegmentWriter(spec, lake)


def _write_in_writer(tp: TopicPartition, segments: list[Segment], owner: dict[str, Any]) -> Written:
    assert _WRITER is not None
    return _WRITER.write_partition(tp, segments, owner)


class Lander(ConsumerRebalanceListener):
    def __init__(self, spec: PipelineSpec, settings: Settings, lake: Lake, *, progress_every_s: float = 5.0,
                 max_poll_records: int = 10_000) -> None:
        self.spec = spec
        self.settings = settings
        self.lake = lake
        self.progress_every_s = progress_every_s
        self.max_poll_records = max_poll_records
        self.policy = spec.ingest
        self.stats = Stats()
        self._open: dict[TopicPartition, Segment] = {}
        self._closed: dict[TopicPartition, list[Segment]] = {}
        self._in_flight: deque[tuple[Future[Written], TopicPartition, int]] = deque()
        self._to_recover: set[TopicPartition] = set()
        self._owner: dict[TopicPartition, dict[str, Any]] = {}  # epoch, generation, member id of what we own
        self._adopting: dict[TopicPartition, Adoption] = {}  # earlier owners' uncommitted batches, being re-read
        self._adopted: dict[TopicPartition, deque[list[Segment]]] = {}  # ... re-read, to land as they were
        self._fenced: set[TopicPartition] = set()  # assigned, but no longer ours to land: paused until reassigned
        # Validation and Parquet encoding run in a second process, so the consumer keeps one core to itself.
        self._writer = ProcessPoolExecutor(max_workers=WRITERS, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_start_writer, initargs=(spec, lake))
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._last_progress = time.monotonic()
        self._metrics = LanderMetrics(spec.name, settings.metrics_port) if settings.metrics_port else None

    # -- lifecycle ----------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to flush what it holds, commit and return (SIGTERM / SIGINT)."""
        self._stop.set()

    def run(self, mode: Mode, *, max_seconds: float | None = None) -> dict[str, Any]:
        ensure_topics(self.spec, self.settings)
        for _ in range(WRITERS):  # start the writers now, from this (the main) thread
            self._writer.submit(os.getpid)
        topics = [e.topic for e in self.spec.events.values()]
        consumer = connect(self._new_consumer, self.settings, "ingest")
        self._consumer = consumer
        consumer.subscribe(topics, listener=self)
        deadline = time.monotonic() + max_seconds if max_seconds else None
        end_offsets = self._end_offsets(consumer, topics) if mode == "until_caught_up" else {}
        last_group_check = 0.0
        self._log(f"landing {', '.join(topics)} into {self.lake.uri} as group {self.policy.consumer_group} ({mode})")
        try:
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=500, max_records=self.max_poll_records)
                recovered = self._recover(consumer)
                for tp, records in batch.items():
                    if tp not in recovered:  # a recovered partition is read again from its committed offset
                        self._take(tp, records)
                assigned = consumer.assignment()
                if mode == "until_caught_up" and assigned and not self._adopting \
                        and all(consumer.position(tp) >= end_offsets[tp] for tp in assigned) \
                        and time.monotonic() - last_group_check > 1.0:
                    # Ours are done; partitions still held by another member (perhaps a dead one whose
                    # session has not expired yet) count only once the group has committed them.
                    last_group_check = time.monotonic()
                    if all(tp in assigned or (consumer.committed(tp) or 0) >= end
                           for tp, end in end_offsets.items()):
                        break
                elif mode == "follow" and not batch:
                    self._close_caught_up(consumer, assigned)
                self._submit_closed(consumer)
                self._commit(consumer, wait=0)
                self._progress(consumer)
                if deadline and time.monotonic() > deadline:
                    self._log(f"--max-seconds {max_seconds} reached")
                    break
            self._close_all()
            self._drain(consumer)
            self.stats.finished = time.monotonic()
        finally:
            self._consumer = None  # the close below revokes partitions: nothing left to land by then
            consumer.close(autocommit=False)
            self._writer.shutdown(wait=True)
        return self.summary(mode, {f"{tp.topic}:{tp.partition}": o for tp, o in end_offsets.items()})

    def _end_offsets(self, consumer: KafkaConsumer, topics: list[str]) -> dict[TopicPartition, int]:
        consumer.topics()  # refreshes cluster metadata
        partitions = []
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise RuntimeError(f"topic {topic!r} has no partitions in the broker's metadata")
            partitions.extend(TopicPartition(topic, i) for i in sorted(ids))
        return consumer.end_offsets(partitions)

    def _new_consumer(self) -> KafkaConsumer:
        client_id = f"ctloop-lander-{self.spec.name}"
        return KafkaConsumer(**consumer_config(self.settings, self.policy.consumer_group, client_id))

    # -- rebalance callbacks (run inside poll) ------------------------------------------------
    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Another member gets these: drop their uncommitted work; the next owner lands it again.

        kafka-python runs rebalance callbacks on its IO thread, where no blocking consumer call (a commit)
        may run, while the main thread waits in ``poll``. So nothing is landed here: the next owner reads
        from the committed offset and adopts what was written meanwhile, with the same segments.
        """
        self.stats.rebalances += 1
        self._to_recover -= set(revoked)
        if revoked and self._consumer is not None:  # None: closing, everything is committed already
            self._drop(set(revoked), "revoked")
        for tp in revoked:
            self._forget(tp)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """The group expired us (a pause past the session timeout, say): others own these now, commit nothing."""
        self.stats.rebalances += 1
        self._to_recover -= set(lost)
        if lost and self._consumer is not None:
            self._drop(set(lost), "lost with this member's session")
        for tp in lost:
            self._forget(tp)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._to_recover |= set(assigned)
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        self._log(f"assigned {len(assigned)} partitions: {names or 'none'}")

    # -- segments -------------------------------------------------------------------------------
    def _recover(self, consumer: KafkaConsumer) -> set[TopicPartition]:
        """Claim each newly assigned partition, adopt its earlier owners' uncommitted batches (module docstring),
        and read it from its committed offset: a partition that comes back to this member keeps its position,
        past the work dropped when it was revoked. Returns the partitions recovered."""
        recovered = set(self._to_recover)
        for tp in sorted(self._to_recover, key=lambda t: (t.topic, t.partition)):
            committed = consumer.committed(tp)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            committed = committed or 0
            self._clean_legacy_intent(tp, committed)
            group = consumer.group_metadata()
            owner = {"epoch": 0, "generation": group.generation_id, "member_id": group.member_id}
            entries = _intent_entries(self.lake, self.spec.name, tp)
            epoch = max((e for e, _, _ in entries), default=0)
            while True:  # the next epoch; create-if-absent, so of owners racing for it one gets it
                epoch += 1
                owner["epoch"] = epoch
                claim = {**owner, "committed": committed, "claimed_at": datetime.now(UTC).isoformat()}
                if self.lake.create(claim_path(self.spec.name, tp.topic, tp.partition, epoch),
                                    json.dumps(claim).encode()):
                    break
                epoch = max([epoch, *(e for e, _, _ in _intent_entries(self.lake, self.spec.name, tp))])
            entries = _intent_entries(self.lake, self.spec.name, tp)  # listed after the claim: see module docstring
            self.stats.partitions.add(f"{tp.topic}:{tp.partition}")
            newer = max((e for e, _, _ in entries), default=epoch)
            if newer > epoch:
                self._fence_out(consumer, tp, f"claimed by epoch {newer} while this member claimed it")
                continue
            self._owner[tp] = owner
            adopt = self._uncommitted(tp, entries, epoch, committed)
            if adopt:
                self._adopting[tp] = Adoption(deque(b["segments"] for b in adopt))
            for b in adopt:
                self.stats.adopted_batches += 1
                self._log(f"{tp.topic}[{tp.partition}]: {len(b['paths'])} uncommitted objects from offsets "
                          f"{b['first_offset']}..{b['last_offset']} (epoch {b['epoch']}, committed: {committed}): "
                          "landing them again with the same segments")
        self._to_recover.clear()
        return recovered

    def _uncommitted(self, tp: TopicPartition, entries: list[tuple[int, int | None, str]], epoch: int,
                     committed: int) -> list[dict[str, Any]]:
        """The batch intents at or after the committed offset, in offset order; collects the rest.

        Of overlapping intents the newest epoch's counts: an older one overlapping it was fenced before
        it wrote anything (otherwise the newer owner would have seen and adopted it, with the same segments).
        """
        pending, garbage = [], []
        for e, first, path in entries:
            if first is None:
                if e < epoch:
                    garbage.append(path)
            elif first < committed:
                garbage.append(path)
            else:
                try:
                    pending.append(dict(json.loads(self.lake.read(path)), epoch=e, path=path))
                except Exception:
                    if self.lake.exists(path):
                        raise
                    # deleted since the listing: a fenced writer's, which wrote nothing
        adopted: list[dict[str, Any]] = []
        for intent in sorted(pending, key=lambda i: -i["epoch"]):
            if any(intent["first_offset"] <= a["last_offset"] and a["first_offset"] <= intent["last_offset"]
                   for a in adopted):
                garbage.append(intent["path"])
            else:
                adopted.append(intent)
        for path in garbage:
            self.lake.delete(path)
        return sorted(adopted, key=lambda i: i["first_offset"])

    def _clean_legacy_intent(self, tp: TopicPartition, committed: int) -> None:
        """The single intent landers wrote before claims and epochs: delete what it names if uncommitted."""
        path = intent_path(self.spec.name, tp.topic, tp.partition)
        if not self.lake.exists(path):
            return
        intent = json.loads(self.lake.read(path))
        if intent["first_offset"] >= committed:
            for orphan in intent["paths"]:
                self.lake.delete(orphan)
            self._log(f"{tp.topic}[{tp.partition}]: removed {len(intent['paths'])} uncommitted objects from "
                      f"offsets {intent['first_offset']}..{intent['last_offset']} (committed: {committed})")
        self.lake.delete(path)

    def _take(self, tp: TopicPartition, records: list[Any]) -> None:
        """Route a fetched batch: drop it (not ours), re-read an adopted batch, or segment it as usual."""
        if tp not in self._owner:
            return
        if tp in self._adopting:
            records = records[self._adopt_records(tp, records):]
            if not records:
                return
        self._append(tp, records)

    def _adopt_records(self, tp: TopicPartition, records: list[Any]) -> int:
        """Cut records into the adopted batches' segments, exactly where they were cut; returns how many it took."""
        adoption = self._adopting[tp]
        i, n = 0, len(records)
        while i < n and adoption.batches:
            batch = adoption.batches[0]
            last = batch[len(adoption.done)][1]
            j = i
            while j < n and records[j].offset <= last:
                j += 1
            if j > i:
                if adoption.open is None:
                    adoption.open = Segment(tp, records[i].offset, records[i].timestamp)
                segment = adoption.open
                for r in records[i:j]:
                    segment.offsets.append(r.offset)
                    segment.timestamps.append(r.timestamp)
                    segment.keys.append(r.key)
                    segment.values.append(r.value)
                    segment.nbytes += len(r.value) if r.value is not None else 0
            i = j
            if adoption.open is not None and (adoption.open.last_offset >= last or j < n):
                adoption.done.append(adoption.open)  # the segment is complete: its last offset has been read
                adoption.open = None
            elif j < n:  # a gap in the log (compaction, transaction markers) skipped the whole segment
                adoption.done.append(Segment(tp, -1, 0))
            else:
                break
            if len(adoption.done) == len(batch):
                segments = [s for s in adoption.done if s.offsets]
                if segments:
                    self._adopted.setdefault(tp, deque()).append(segments)
                adoption.done = []
                adoption.batches.popleft()
        if not adoption.batches:
            del self._adopting[tp]
        if self.stats.first_record is None and i:
            self.stats.first_record = time.monotonic()
        self.stats.consumed += i
        return i

    def _append(self, tp: TopicPartition, records: list[Any]) -> None:
        """Add a fetched batch to the partition's segments, closing them by size and record time.

        Equivalent to checking the rules record by record (time before adding a record, size after),
        but on whole slices: the consumer's thread is the lander's bottleneck.
        """
        policy = self.policy
        rotate_ms = policy.rotate_interval_s * 1000
        offsets = [r.offset for r in records]
        timestamps = [r.timestamp for r in records]
        keys = [r.key for r in records]
        values = [r.value for r in records]
        ts = np.array(timestamps, dtype=np.int64)
        try:
            sizes = list(map(len, values))
        except TypeError:  # tombstones (None values) are rare
            sizes = [len(v) if v is not None else 0 for v in values]
        cum_bytes = np.cumsum(np.array(sizes, dtype=np.int64))
        closed = self._closed.setdefault(tp, [])
        segment = self._open.pop(tp, None)
        i, n = 0, len(records)
        while i < n:
            if segment is None:
                segment = Segment(tp, offsets[i], timestamps[i])
            stop, close = n, False
            room = policy.flush_records - len(segment.offsets)
            if i + room <= n:
                stop, close = i + room, True
            late = np.flatnonzero(ts[i:stop] >= segment.first_timestamp + rotate_ms)
            if late.size:
                stop, close = i + int(late[0]), True
            base = int(cum_bytes[i - 1]) if i else 0
            full = int(np.searchsorted(cum_bytes[i:stop], policy.flush_bytes - segment.nbytes + base))
            if full < stop - i:
                stop, close = i + full + 1, True
            segment.offsets.extend(offsets[i:stop])
            segment.timestamps.extend(timestamps[i:stop])
            segment.keys.extend(keys[i:stop])
            segment.values.extend(values[i:stop])
            segment.nbytes += int(cum_bytes[stop - 1]) - base if stop > i else 0
            if close:
                if segment.offsets:
                    closed.append(segment)
                segment = None
            i = stop
        if segment is not None:
            self._open[tp] = segment
        if self.stats.first_record is None:
            self.stats.first_record = time.monotonic()
        self.stats.consumed += n

    def _close_caught_up(self, consumer: KafkaConsumer, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            segment = self._open.get(tp)
            if segment is not None and consumer.highwater(tp) is not None \
                    and segment.last_offset + 1 >= consumer.highwater(tp):
                self._closed.setdefault(tp, []).append(self._open.pop(tp))

    def _close_all(self) -> None:
        for tp in list(self._open):
            self._closed.setdefault(tp, []).append(self._open.pop(tp))
        for tp in list(self._adopting):  # stopped early (--max-seconds, SIGTERM): the next owner adopts it
            del self._adopting[tp]
            self._log(f"{tp.topic}[{tp.partition}]: stopped while landing an earlier owner's batch again; "
                      "its next owner does it")

    def _submit_closed(self, consumer: KafkaConsumer) -> None:
        """Hand closed segments to the writers: one task per partition at a time, so a partition's
        batches are written, and committed, in offset order. Adopted batches go first and as they were."""
        for tp in list(self._adopted):
            while self._adopted.get(tp):
                self._submit(consumer, tp, self._adopted[tp].popleft())
            self._adopted.pop(tp, None)
        for tp in list(self._closed):
            segments = self._closed.get(tp)
            if not segments:
                self._closed.pop(tp, None)
                continue
            if any(t == tp for _, t, _ in self._in_flight) and len(segments) < 2:
                continue  # it goes with the next submit, once the partition's current write is done
            del self._closed[tp]
            self._submit(consumer, tp, segments)

    def _submit(self, consumer: KafkaConsumer, tp: TopicPartition, segments: list[Segment]) -> None:
        """Write one batch, once the partition's previous batch is committed (back-pressure bounds memory)."""
        while any(t == tp for _, t, _ in self._in_flight) or len(self._in_flight) >= MAX_IN_FLIGHT:
            self._commit(consumer, wait=1)
        owner = self._owner.get(tp)
        if owner is None:  # lost or fenced while waiting: the next owner lands these offsets
            return
        future = self._writer.submit(_write_in_writer, tp, segments, owner)
        self._in_flight.append((future, tp, segments[-1].last_offset + 1))

    def _commit(self, consumer: KafkaConsumer, *, wait: int) -> None:
        """Commit, in submission order, every finished write (waiting for at least ``wait`` of them).

        A write fenced by a newer owner, or a commit the group refuses (this member was expired: Kafka's
        own fencing), drops the partitions' uncommitted work: their intents stay, and the next owner lands
        those offsets again with the same segments.
        """
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        written: list[Written] = []
        taken = 0
        while self._in_flight and (taken < wait or self._in_flight[0][0].done()):
            future, tp, next_offset = self._in_flight.popleft()
            taken += 1
            result = future.result()  # a failed write raises here, before any offset moves
            if result.fenced_by is not None:
                self.stats.dropped_batches += 1
                by = result.fenced_by
                self._fence_out(consumer, tp, f"fenced by epoch {by.get('epoch')} (generation {by.get('generation')},"
                                              f" member {by.get('member_id')})")
                continue
            written.append(result)
            offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            self.stats.dropped_batches += len(written)
            for tp in offsets:
                self._fence_out(consumer, tp, f"offset commit refused ({type(exc).__name__}): the group moved on")
            return
        for w in written:
            self.stats.landed += w.rows
            self.stats.dead_letters += w.dead_letters
            self.stats.files += len(w.files)
            self.stats.manifests += 1
            self.stats.hours.update(f["lake_partition"] for f in w.files if f["kind"] == "raw")
            if self._metrics:
                self._metrics.landed(w.rows, w.dead_letters)

    def _drain(self, consumer: KafkaConsumer) -> None:
        """Submit everything closed and commit it all (end of run)."""
        while self._closed or self._adopted or self._in_flight:
            self._submit_closed(consumer)
            self._commit(consumer, wait=len(self._in_flight))

    # -- losing partitions ------------------------------------------------------------------------
    def _drop(self, tps: set[TopicPartition], why: str) -> None:
        """Forget every record and write of ``tps`` not yet committed (their intents remain for the next owner)."""
        for tp in tps:
            self._open.pop(tp, None)
            self._closed.pop(tp, None)
            self._adopting.pop(tp, None)
            self._adopted.pop(tp, None)
            self._owner.pop(tp, None)
        self._in_flight = deque(entry for entry in self._in_flight if entry[1] not in tps)
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))
        self._log(f"{names}: {why}; dropping uncommitted work, the next owner lands it again")

    def _fence_out(self, consumer: KafkaConsumer, tp: TopicPartition, why: str) -> None:
        """Stop landing ``tp`` until the group assigns it again: drop its work and pause its fetching."""
        self._drop({tp}, why)
        self._fenced.add(tp)
        try:
            consumer.pause(tp)
        except Exception:  # noqa: BLE001 (not assigned any more: nothing to pause)
            pass

    def _forget(self, tp: TopicPartition) -> None:
        """No longer assigned (a new assignment starts unpaused, from the committed offset)."""
        self._owner.pop(tp, None)
        self._adopting.pop(tp, None)
        self._fenced.discard(tp)

    # -- reporting ----------------------------------------------------------------------------
    def _lag(self, consumer: KafkaConsumer) -> int | None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                return None
            lag += max(high - consumer.position(tp), 0)
        return lag

    def _progress(self, consumer: KafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        elapsed = now - self.stats.started
        lag = self._lag(consumer)
        if self._metrics and lag is not None:
            self._metrics.lag.labels(self.spec.name).set(lag)
        self._log(f"consumed {self.stats.consumed:,} | landed {self.stats.landed:,} | dead letters "
                  f"{self.stats.dead_letters:,} | {self.stats.consumed / elapsed:,.0f} events/s | lag "
                  f"{'?' if lag is None else f'{lag:,}'}")

    def _log(self, message: str) -> None:
        print(f"[ingest {self.spec.name}] {message}", file=sys.stderr, flush=True)

    def summary(self, mode: str, end_offsets: dict[str, int]) -> dict[str, Any]:
        now = time.monotonic()
        first = self.stats.first_record
        landing = (self.stats.finished or now) - first if first is not None else 0.0
        return {
            "pipeline": self.spec.name, "mode": mode, "lake": self.lake.uri,
            "consumer_group": self.policy.consumer_group, "consumed": self.stats.consumed,
            "landed": self.stats.landed, "dead_letters": self.stats.dead_letters, "files": self.stats.files,
            "manifests": self.stats.manifests, "adopted_batches": self.stats.adopted_batches,
            "dropped_batches": self.stats.dropped_batches,
            "rebalances": self.stats.rebalances, "partitions": sorted(self.stats.partitions),
            "end_offsets": end_offsets, "seconds": round(now - self.stats.started, 2),
            "seconds_to_first_record": round(first - self.stats.started, 2) if first is not None else None,
            "events_per_s": round(self.stats.consumed / landing, 1) if landing else None,
            "interval": hours_interval(self.stats.hours),
        }


def land(spec: PipelineSpec, settings: Settings, lake: Lake, mode: Mode, *,
         max_seconds: float | None = None) -> dict[str, Any]:
    """Run the lander in the foreground; SIGTERM and SIGINT flush, commit and return."""
    lander = Lander(spec, settings, lake)
    previous = {sig: signal.signal(sig, lander.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return lander.run(mode, max_seconds=max_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def follow_all(settings: Settings, *, max_seconds: float | None = None) -> int:
    """``ctloop ingest --all --follow``: one lander process per spec in ``CTLOOP_PIPELINES_DIR``, supervised.

    A lander that exits stops the others and makes this exit non-zero, so Kubernetes restarts the pod;
    SIGTERM and SIGINT stop them all cleanly (each lands and commits what it holds). With
    ``CTLOOP_METRICS_PORT`` set, each lander serves its metrics on a private port and this process serves
    them all together on that port, for the probes and Prometheus.
    """
    from ctloop.config.spec import load_spec

    names = sorted(p.stem for p in settings.pipelines_dir.glob("*.yaml"))
    if not names:
        raise ValueError(f"{settings.pipelines_dir}: no pipeline specs to land")
    for name in names:  # a bad spec is an error now, not a restart loop later
        load_spec(name, settings.pipelines_dir)
    ports = {name: _free_port() for name in names} if settings.metrics_port else {}
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    extra = ["--max-seconds", str(max_seconds)] if max_seconds else []
    procs: dict[str, Any] = {}
    failed: list[str] = []
    try:
        for name in names:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if name in ports:
                env["CTLOOP_METRICS_PORT"] = str(ports[name])
            procs[name] = subprocess.Popen([sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", name,
                                            "--follow", *extra], env=env, preexec_fn=_die_with_parent)
            print(f"[ingest --all] {name}: lander pid {procs[name].pid}", file=sys.stderr, flush=True)
        if settings.metrics_port:  # started after the landers: no thread may run while preexec_fn forks
            _serve_merged_metrics(settings.metrics_port, list(ports.values()))
        while not stop.is_set():
            exited = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if exited:
                failed = [n for n, rc in exited.items() if rc != 0 or not max_seconds]
                why = ", ".join(f"{n} exited with {rc}" for n, rc in exited.items())
                print(f"[ingest --all] {why}: stopping the others", file=sys.stderr, flush=True)
                break
            stop.wait(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 50  # within the pod's termination grace period
        for name, proc in procs.items():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:  # it did not stop in time
                proc.kill()
                proc.wait()
            if proc.returncode != 0 and name not in failed:
                failed.append(name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = {n: p.returncode for n, p in procs.items()}
    print(json.dumps({"mode": "follow", "pipelines": names, "exit_codes": codes, "failed": sorted(failed)}),
          flush=True)
    return 1 if failed else 0


def _die_with_parent() -> None:
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a lander stops (cleanly) with its supervisor


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_merged_metrics(port: int, children: list[int]) -> None:
    """Serve, on ``port``, the metrics of the landers listening on ``children`` (127.0.0.1) as one page."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    class Merged:
        def collect(self) -> Any:
            import urllib.request

            families: dict[str, Metric] = {}
            for child in children:
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{child}/metrics", timeout=2).read().decode()
                except OSError:
                    continue  # still starting
                for family in text_string_to_metric_families(text):
                    merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                    merged.samples.extend(family.samples)
            yield from families.values()

    registry = CollectorRegistry()
    registry.register(Merged())
    start_http_server(port, registry=registry)
