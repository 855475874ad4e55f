"""What the serving benchmark and the deploy tests share: registered models, a real Feast online store
holding their entities' features, infer requests, and an open-loop load generator.

* ``write_feature_rows``: feature rows of a synthetic frame in the lake, in the layout the Spark features
  job writes (``features/<pipeline>/<view>/event_date=``), so ``ctloop materialize`` (real
  Feast, the SQLite online store) serves them; Spark itself is measured and tested elsewhere.
* ``train_version``: snapshot → train → evaluate → register, the jobs' own functions, one model version.
* ``OpenLoop``: requests at a fixed rate whatever the answers do (open loop: a slow answer does not slow
  the sender), over a pool of keep-alive HTTP/1.1 connections on raw asyncio streams, so the client costs
  little CPU next to what it measures. Latency counts from each request's scheduled send time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

IDLE_S = 2.0  # the client closes a pooled connection idle this long (servers close theirs after a few seconds)


def conform(spec: Any, frame: Any) -> Any:
    """``frame`` (``synthetic_training_frame``) with string fields cut to their ``max_length`` (a two-letter
    country, say): what the lander lets into the lake, and what the server accepts."""
    for name, field_spec in spec.events[spec.primary].fields.items():
        if field_spec.type == "string" and field_spec.max_length and name in frame:
            frame[name] = frame[name].astype(str).str[-field_spec.max_length:]
    return frame


def write_feature_rows(lake: Any, spec: Any, frame: Any) -> int:
    """Each view's rows of ``frame`` (entity key, event time, the view's features) as the Spark job writes them."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ctloop.lake.paths import day_partition, features_prefix

    rows = 0
    created = pd.Timestamp.now(tz="UTC").floor("s")
    for view_name, view in spec.features.views.items():
        key = spec.features.entities[view.entity].join_key
        part = frame[[key, "event_timestamp", *view.feature_types]].copy()
        part["created_timestamp"] = created
        part = part.drop_duplicates([key, "event_timestamp"])
        for day, chunk in part.groupby(part["event_timestamp"].dt.floor("D")):
            table = pa.Table.from_pandas(chunk.reset_index(drop=True), preserve_index=False)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            path = f"{features_prefix(spec.name, view_name)}/{day_partition(day.to_pydatetime())}/part-0.parquet"
            lake.write(path, sink.getvalue().to_pybytes())
        rows += len(part)
    return rows


def train_version(spec: Any, settings: Any, lake: Any, snapshot_id: str, frame: Any, start: datetime,
                  days: int) -> str:
    """One registered version trained on ``frame`` (written as snapshot ``snapshot_id``)."""
    from ctloop.evaluation.evaluate import evaluate
    from ctloop.registry.register import register
    from ctloop.training.train import train
    from ctloop.training.training_set import write_snapshot

    write_snapshot(lake, spec, snapshot_id, frame, start=start, end=start + timedelta(days=days),
                   as_of=start + timedelta(days=days + 30), sources={})
    trained = train(spec, settings, lake, snapshot_id)
    decision = evaluate(spec, settings, lake, trained["run_id"])
    if not decision["passed"]:
        raise RuntimeError(f"the gate refused the {snapshot_id} model: {decision['reasons']}")
    return str(register(spec, settings, trained["run_id"])["version"])


def infer_bodies(spec: Any, frame: Any, n: int) -> list[bytes]:
    """``n`` one-row OIP v2 requests (id, entity keys, request fields: the features come from Feast)."""
    primary = spec.events[spec.primary]
    keys = list(dict.fromkeys(spec.features.entities[v.entity].join_key for v in spec.features.views.values()))
    names = list(dict.fromkeys([primary.id_field, *keys, *spec.model.request_fields]))
    kinds = {"string": "BYTES", "int": "INT64", "double": "FP64", "bool": "BOOL"}
    bodies = []
    for i, row in enumerate(frame.head(n).to_dict("records")):
        inputs = []
        for name in names:
            kind = primary.fields[name].type
            value = row[name]
            value = str(value) if kind == "string" else (bool(value) if kind == "bool" else
                                                         (int(value) if kind == "int" else float(value)))
            inputs.append({"name": name, "datatype": kinds[kind], "shape": [1], "data": [value]})
        bodies.append(json.dumps({"id": f"load-{i}", "inputs": inputs}).encode())
    return bodies


@dataclass
class Sample:
    scheduled: float
    done: float
    status: int
    slot: str = ""
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.done - self.scheduled) * 1000


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200]

    def summary(self) -> dict[str, Any]:
        lat = sorted(s.latency_ms for s in self.samples if s.status == 200)
        seconds = max(self.ended - self.started, 1e-9)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, max(0, int(q * len(lat) + 0.5) - 1))], 3) if lat else None

        return {"sent": self.sent, "failed": len(self.failed), "seconds": round(seconds, 2),
                "achieved_rps": round(self.sent / seconds, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "max_ms": round(lat[-1], 3) if lat else None}


class OpenLoop:
    """POST ``bodies`` (round robin) to ``http://host:port{path}`` at ``rate`` per second until stopped."""

    def __init__(self, host: str, port: int, path: str, bodies: list[bytes], *, token: str, rate: float,
                 max_connections: int = 256, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.path, self.bodies = host, port, path, bodies
        self.rate, self.max_connections, self.timeout_s = rate, max_connections, timeout_s
        self.head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {token}\r\n"
                     "content-type: application/json\r\n").encode()
        self.stop = threading.Event()
        self.result = LoadResult()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._open = 0

    def run(self, duration_s: float | None = None) -> LoadResult:
        """Send until ``duration_s`` has passed or ``stop`` is set; the result (blocking)."""
        try:
            import uvloop

            uvloop.run(self._run(duration_s))
        except ImportError:
            asyncio.run(self._run(duration_s))
        return self.result

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    async def _run(self, duration_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        wall0 = time.time()
        self.result.started = wall0
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while not self.stop.is_set() and (duration_s is None or loop.time() - t0 < duration_s):
            due = t0 + i / self.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(self._one(self.bodies[i % len(self.bodies)], wall0 + (due - t0)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 5)
        self.result.ended = time.time()
        for _, writer, _ in self._idle:
            writer.close()

    async def _one(self, body: bytes, scheduled: float) -> None:
        request = self.head + b"content-length: %d\r\n\r\n" % len(body) + body
        try:
            status, slot = await asyncio.wait_for(self._exchange(request), self.timeout_s)
            self.result.samples.append(Sample(scheduled, time.time(), status, slot))
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            self.result.samples.append(Sample(scheduled, time.time(), 0, error=repr(exc)))

    async def _exchange(self, request: bytes) -> tuple[int, str]:
        """One request on a pooled keep-alive connection, never retried: every failure counts. A connection idle
        longer than ``IDLE_S`` is closed, not reused: servers close idle connections (uvicorn after 5 s), and a
        request sent on one the server is closing would fail for the client's reasons, not the server's."""
        loop = asyncio.get_running_loop()
        while self._idle:
            reader, writer, used = self._idle.pop()
            if loop.time() - used < IDLE_S and not writer.is_closing():
                break
            writer.close()
            self._open -= 1
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._open += 1
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = {k.strip().lower(): v.strip() for k, v in
                      (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)}
            await reader.readexactly(int(fields.get(b"content-length", b"0")))
        except BaseException:
            writer.close()
            self._open -= 1
            raise
        if b"close" in fields.get(b"connection", b"").lower():
            writer.close()
            self._open -= 1
        else:
            self._idle.append((reader, writer, loop.time()))
        return status, fields.get(b"x-ctloop-slot", b"").decode()


class ClosedLoop:
    """``workers`` clients, each sending its next request as soon as the last one was answered: the
    throughput at saturation (requests answered per second) and the latencies under it."""

    def __init__(self, host: str, port: int, path: str, bodies: list[bytes], *, token: str, workers: int) -> None:
        self.open_loop = OpenLoop(host, port, path, bodies, token=token, rate=1.0)
        self.workers = workers

    def run(self, duration_s: float) -> dict[str, Any]:
        try:
            import uvloop

            return uvloop.run(self._run(duration_s))
        except ImportError:
            return asyncio.run(self._run(duration_s))

    async def _run(self, duration_s: float) -> dict[str, Any]:
        client = self.open_loop
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        answered, failed, latencies = 0, 0, []

        async def worker(w: int) -> None:
            nonlocal answered, failed
            i = w
            while loop.time() < end:
                body = client.bodies[i % len(client.bodies)]
                started = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(
                        client._exchange(client.head + b"content-length: %d\r\n\r\n" % len(body) + body), 30)
                except Exception:  # noqa: BLE001
                    status = 0
                latencies.append((time.perf_counter() - started) * 1000)
                answered += status == 200
                failed += status != 200
                i += self.workers

        started = loop.time()
        await asyncio.gather(*(worker(w) for w in range(self.workers)))
        seconds = loop.time() - started
        latencies.sort()
        for _, writer, _ in client._idle:
            writer.close()
        return {"workers": self.workers, "seconds": round(seconds, 1), "answered": answered, "failed": failed,
                "rps": round(answered / seconds, 1),
                "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
                "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None}

