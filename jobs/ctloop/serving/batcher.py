"""Dynamic batching: concurrent requests are scored by one lookup and one model call.

A request's rows wait in a queue. The first waiting request opens a batch, which closes when it holds
``serving.max_batch_size`` rows or ``serving.max_wait_ms`` after it opened, whichever comes first
(Triton's ``max_queue_delay``). Waiting for company pays only when company comes: a request that
arrives more than ``max_wait_ms`` after the one before it (a quiet server: at 200 requests/s they are
5 ms apart) is scored at once, so low traffic never pays the wait. A request is never split: one
larger than the batch size is scored alone, and one that would overflow the open batch waits for the
next. Batches are scored one at a
time on one worker thread (TensorFlow and the feature store client stay on one thread), so while a
batch is scored the next one fills up by itself; the event loop stays free for HTTP meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ctloop.serving.metrics import ServingMetrics


class Batcher:
    def __init__(self, score: Callable[[list[dict[str, Any]]], Any], *, max_batch_size: int, max_wait_ms: float,
                 metrics: ServingMetrics | None = None) -> None:
        self._score = score
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._metrics = metrics
        self._waiting: deque[tuple[list[dict[str, Any]], asyncio.Future[Any], float]] = deque()  # rows, future, arrival
        self._rows_waiting = 0
        self._last_arrival = float("-inf")
        self._lone = False  # the request that opens the next batch came alone (see the module's docstring)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ctloop-score")

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ctloop-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _, future, _ in self._waiting:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, rows: list[dict[str, Any]]) -> tuple[Any, int, int]:
        """Score ``rows`` with whatever else arrives; returns (the batch's result, first row, end row)."""
        assert self._wakeup is not None, "Batcher.start() was not called"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        if not self._waiting:
            self._lone = now - self._last_arrival > self.max_wait_s
        self._last_arrival = now
        self._waiting.append((rows, future, now))
        self._rows_waiting += len(rows)
        self._wakeup.set()
        return await future

    def run_in_worker(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``func`` on the scoring thread (between batches): model and store are not shared across threads."""
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # the wait counts from the oldest request's arrival: one that queued while a batch was scored has waited
            deadline = self._waiting[0][2] + (0.0 if self._lone else self.max_wait_s)
            while self._rows_waiting < self.max_batch_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch, rows = [], []
            while self._waiting:
                request_rows, future, _ = self._waiting[0]
                if batch and len(rows) + len(request_rows) > self.max_batch_size:
                    break
                self._waiting.popleft()
                self._rows_waiting -= len(request_rows)
                if future.done():  # the client went away while waiting
                    continue
                batch.append((len(rows), len(rows) + len(request_rows), future))
                rows.extend(request_rows)
            if not batch:
                continue
            if self._metrics is not None:
                self._metrics.batch_rows.observe(len(rows))
                self._metrics.batch_requests.observe(len(batch))
            try:
                result = await loop.run_in_executor(self._executor, self._score, rows)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for start, end, future in batch:
                    if not future.done():
                        future.set_result((result, start, end))
