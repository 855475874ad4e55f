"""Rolling per-slot request counts: how many, how many failed, and the latency distribution, per second.

The traffic switch records every request it forwards here, and the deploy's watch reads the
figures for the live slot since the switch (or over the last few seconds). Latencies go into
log-spaced bins (5 % wide), so a second of traffic costs a few dozen integers whatever the rate,
and a percentile is exact to within one bin (reported as the bin's upper edge: never optimistic).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

_BIN_BASE = 1.05
_MIN_S = 1e-5  # everything faster than 10 µs shares the first bin
RETAIN_S = 3600  # seconds of history kept per slot


def _bin(seconds: float) -> int:
    return 0 if seconds <= _MIN_S else int(math.ceil(math.log(seconds / _MIN_S, _BIN_BASE)))


def _upper_edge_ms(index: int) -> float:
    return _MIN_S * _BIN_BASE**index * 1000


@dataclass
class _Second:
    at: int
    requests: int = 0
    errors: int = 0
    max_s: float = 0.0
    bins: dict[int, int] = field(default_factory=dict)


class RollingStats:
    """Per-second buckets of one slot's requests, the last ``RETAIN_S`` seconds."""

    def __init__(self, clock: callable = time.time) -> None:  # type: ignore[valid-type]
        self._clock = clock
        self._seconds: deque[_Second] = deque()

    def record(self, latency_s: float, error: bool, at: float | None = None) -> None:
        second = int(at if at is not None else self._clock())
        if not self._seconds or self._seconds[-1].at != second:
            self._seconds.append(_Second(second))
            while self._seconds and self._seconds[0].at < second - RETAIN_S:
                self._seconds.popleft()
        bucket = self._seconds[-1]
        bucket.requests += 1
        bucket.errors += error
        bucket.max_s = max(bucket.max_s, latency_s)
        index = _bin(latency_s)
        bucket.bins[index] = bucket.bins.get(index, 0) + 1

    def summary(self, since: float | None = None, until: float | None = None) -> dict[str, float | int | None]:
        """Counts and latency percentiles of the requests recorded in whole seconds ``[since, until)``
        (epoch seconds; a bucket counts when its second starts at or after ``int(since)``)."""
        first = int(since) if since is not None else -1
        last = int(until) if until is not None else None
        requests = errors = 0
        max_s = 0.0
        bins: dict[int, int] = {}
        for bucket in self._seconds:
            if bucket.at < first or (last is not None and bucket.at >= last):
                continue
            requests += bucket.requests
            errors += bucket.errors
            max_s = max(max_s, bucket.max_s)
            for index, count in bucket.bins.items():
                bins[index] = bins.get(index, 0) + count
        return {"requests": requests, "errors": errors,
                "error_rate": round(errors / requests, 6) if requests else None,
                "p50_ms": _percentile(bins, requests, 0.50), "p99_ms": _percentile(bins, requests, 0.99),
                "max_ms": round(max_s * 1000, 3) if requests else None}


def _percentile(bins: dict[int, int], total: int, q: float) -> float | None:
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return round(_upper_edge_ms(index), 3)
    return None
