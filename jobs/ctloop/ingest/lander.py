"""The lander: Kafka topics into the lake as Parquet, exactly once, in a consumer group.

The protocol, after Kafka Connect's S3 sink:

* Each Kafka partition accumulates a *segment* of consecutive offsets. A segment closes by size
  (records, bytes) or by record time (Kafka timestamp moves ``rotate_interval_s`` past the
  segment's first record), so a replay from the same committed offset closes it at the same place.
* A closed segment becomes one Parquet file per event hour touched, named
  ``<topic>+<partition>+<first offset>.parquet`` under ``raw/<pipeline>/<topic>/event_date=…/event_hour=…/``,
  plus one dead-letter file for its invalid messages. Rewriting a segment overwrites the same names.
* Before writing, the lander records an *intent* (the names it is about to write) per partition;
  after the files and the manifest are durable it commits the offsets. On (re)assignment, an
  intent that starts at or after the committed offset belongs to work that was never committed:
  its files are deleted before the partition is consumed again. So a crash, a SIGKILL or a
  rebalance at any moment leaves every event in the lake exactly once.

Segments that end because the partition is caught up (not by size or time) are the one place
where file boundaries depend on timing; the intent cleanup keeps those exact too.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from array import array
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ctloop import __version__
from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.ingest.broker import client_config, connect, ensure_topics
from ctloop.ingest.events import EventCodec
from ctloop.ingest.metrics import LanderMetrics
from ctloop.lake.paths import dlq_prefix, intent_path, manifest_prefix, partition_of, raw_prefix
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
        "max_poll_interval_ms": 600_000,
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
    """What one batch (a partition's closed segments) put in the lake."""

    rows: int
    dead_letters: int
    files: list[dict[str, Any]]


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
    recovered_orphans: int = 0
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

    def write_partition(self, tp: TopicPartition, segments: list[Segment]) -> Written:
        codec = self.codecs[tp.topic]
        planned: list[tuple[str, pa.Table, dict[str, Any]]] = []
        for segment in segments:
            planned.extend(self._plan_segment(codec, segment))
        first, last = segments[0].first_offset, segments[-1].last_offset
        manifest_path = f"{manifest_prefix(self.spec.name)}/{tp.topic}/{_file_name(tp, first)[:-8]}.json"
        intent = {"first_offset": first, "last_offset": last, "paths": [p for p, _, _ in planned] + [manifest_path]}
        self.lake.write(intent_path(self.spec.name, tp.topic, tp.partition), json.dumps(intent).encode())
        # Parquet encoding and fsync/PUT release the GIL: overlap them across files.
        list(self._io.map(self._write_parquet, [(path, table) for path, table, _ in planned]))
        files = [dict(info, path=path) for path, _, info in planned]
        rows = sum(f["rows"] for f in files if f["kind"] == "raw")
        dead = sum(f["rows"] for f in files if f["kind"] == "dead_letter")
        manifest = {
            "pipeline": self.spec.name, "spec_hash": self.spec.spec_hash, "lander_version": __version__,
            "topic": tp.topic, "partition": tp.partition, "first_offset": first, "last_offset": last,
            "rows": rows, "dead_letters": dead, "files": files,
            "partitions_touched": sorted({f["lake_partition"] for f in files if f["kind"] == "raw"}),
            "landed_at": datetime.now(UTC).isoformat(),
        }
        self.lake.write(manifest_path, json.dumps(manifest, indent=1).encode())
        return Written(rows, dead, files)

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
                lake_partition = partition_of(start)
                first_offset = part["_kafka_offset"][0].as_py()
                path = f"{raw_prefix(self.spec.name, tp.topic)}/{lake_partition}/{_file_name(tp, first_offset)}"
                times = part[codec.event.time_field]
                info = {"kind": "raw", "rows": part.num_rows, "lake_partition": lake_partition,
                        "first_offset": first_offset, "last_offset": part["_kafka_offset"][-1].as_py(),
                        "min_event_time": pc.min(times).as_py().isoformat(),
                        "max_event_time": pc.max(times).as_py().isoformat()}
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


def _write_in_writer(tp: TopicPartition, segments: list[Segment]) -> Written:
    assert _WRITER is not None
    return _WRITER.write_partition(tp, segments)


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
                self._recover(consumer)
                for tp, records in batch.items():
                    self._append(tp, records)
                assigned = consumer.assignment()
                if mode == "until_caught_up" and assigned \
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
        self.stats.rebalances += 1
        consumer = self._consumer
        if consumer is None or not revoked:
            return
        # Land what we hold for the partitions we lose, so the next owner starts after it.
        for tp in revoked:
            segment = self._open.pop(tp, None)
            if segment is not None:
                self._closed.setdefault(tp, []).append(segment)
        self._drain(consumer)
        for tp in revoked:
            self._to_recover.discard(tp)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._to_recover |= set(assigned)
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        self._log(f"assigned {len(assigned)} partitions: {names or 'none'}")

    # -- segments -------------------------------------------------------------------------------
    def _recover(self, consumer: KafkaConsumer) -> None:
        """Delete files of work that was written but never committed (see the module docstring)."""
        for tp in sorted(self._to_recover, key=lambda t: (t.topic, t.partition)):
            path = intent_path(self.spec.name, tp.topic, tp.partition)
            if self.lake.exists(path):
                intent = json.loads(self.lake.read(path))
                committed = consumer.committed(tp) or 0
                if intent["first_offset"] >= committed:
                    for orphan in intent["paths"]:
                        self.lake.delete(orphan)
                    self.lake.delete(path)
                    self.stats.recovered_orphans += len(intent["paths"])
                    self._log(f"{tp.topic}[{tp.partition}]: removed {len(intent['paths'])} uncommitted objects from "
                              f"offsets {intent['first_offset']}..{intent['last_offset']} (committed: {committed})")
            self.stats.partitions.add(f"{tp.topic}:{tp.partition}")
        self._to_recover.clear()

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

    def _submit_closed(self, consumer: KafkaConsumer) -> None:
        """Hand closed segments to the writers: one task per partition at a time, so a partition's
        intent always describes its only unfinished write."""
        for tp in list(self._closed):
            segments = self._closed[tp]
            if not segments:
                del self._closed[tp]
                continue
            busy = any(t == tp for _, t, _ in self._in_flight)
            if busy and len(segments) < 2:
                continue  # it goes with the next submit, once the partition's current write is done
            while busy or len(self._in_flight) >= MAX_IN_FLIGHT:  # back-pressure bounds memory
                self._commit(consumer, wait=1)
                busy = any(t == tp for _, t, _ in self._in_flight)
            del self._closed[tp]
            future = self._writer.submit(_write_in_writer, tp, segments)
            self._in_flight.append((future, tp, segments[-1].last_offset + 1))

    def _commit(self, consumer: KafkaConsumer, *, wait: int) -> None:
        """Commit, in submission order, every finished write (waiting for at least ``wait`` of them)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        written: list[Written] = []
        while self._in_flight and (len(written) < wait or self._in_flight[0][0].done()):
            future, tp, next_offset = self._in_flight.popleft()
            written.append(future.result())  # a failed write raises here, before any offset moves
            offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
        if not offsets:
            return
        consumer.commit(offsets)
        for w in written:
            self.stats.landed += w.rows
            self.stats.dead_letters += w.dead_letters
            self.stats.files += len(w.files)
            self.stats.manifests += 1
            self.stats.hours.update(f["lake_partition"] for f in w.files if f["kind"] == "raw")
            if self._metrics:
                self._metrics.landed(w.rows, w.dead_letters)

    def _drain(self, consumer: KafkaConsumer) -> None:
        """Submit everything closed and commit it all (end of run, lost partitions)."""
        while self._closed or self._in_flight:
            self._submit_closed(consumer)
            self._commit(consumer, wait=len(self._in_flight))

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
            "manifests": self.stats.manifests, "recovered_orphans": self.stats.recovered_orphans,
            "rebalances": self.stats.rebalances, "partitions": sorted(self.stats.partitions),
            "end_offsets": end_offsets, "seconds": round(now - self.stats.started, 2),
            "seconds_to_first_record": round(first - self.stats.started, 2) if first is not None else None,
            "events_per_s": round(self.stats.consumed / landing, 1) if landing else None,
            "interval": _hours_interval(self.stats.hours),
        }


def _hours_interval(partitions: set[str]) -> list[str] | None:
    """[start, end) in whole hours covering the lake partitions landed (``event_date=…/event_hour=…``).

    Airflow's asset events carry it, so the features DAG recomputes exactly the hours that changed.
    """
    if not partitions:
        return None
    hours = sorted(datetime.strptime(p, "event_date=%Y-%m-%d/event_hour=%H").replace(tzinfo=UTC) for p in partitions)
    return [hours[0].isoformat(), (hours[-1] + timedelta(hours=1)).isoformat()]


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
