"""Monitoring benchmark: the drift check on 100k current x 100k reference rows with every model input of the
reference spec, and the Great Expectations suite of the landed stream on the same 100k rows, against the time
to read those rows from Parquet into memory (the baseline, same run). Prints one JSON line.

The rows are synthetic (``synthetic_training_frame``, the reference spec's columns, strings cut to their
``max_length`` as the lander would); the current side comes from another seed (whose category weights differ)
and has its amounts scaled by 1.7, so the check has something to find. ``drift_seconds`` is what
``ctloop monitor`` spends on drift once the rows are in memory: sampling, the statistics, the correction and
Evidently's HTML report. Goal: under 30 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctloop.config.spec import load_spec  # noqa: E402
from ctloop.monitoring.drift import input_columns, judge, report_html, verdict  # noqa: E402
from ctloop.sim.simulator import synthetic_training_frame  # noqa: E402

from benchmarks.machine import machine  # noqa: E402
from benchmarks.serve_world import conform  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 100_000)))
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ctloop.monitoring.quality import validate_frame

    spec = load_spec("fraud", ROOT / "pipelines")
    kinds = input_columns(spec)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    print(f"[bench-monitor] {args.rows:,} reference and {args.rows:,} current rows, {len(kinds)} inputs",
          file=sys.stderr, flush=True)
    reference = conform(spec, synthetic_training_frame(spec, args.rows, seed=1, start=start, days=30))
    current = conform(spec, synthetic_training_frame(spec, args.rows, seed=2, start=start, days=1))
    current["amount"] *= 1.7
    primary = list(spec.events[spec.primary].fields)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(current[[*primary, *spec.feature_columns]], preserve_index=False), sink)
    data = sink.getvalue()

    t = time.perf_counter()
    current = pq.read_table(pa.BufferReader(data)).to_pandas()
    read_s = time.perf_counter() - t

    drift = spec.monitoring.drift
    t = time.perf_counter()
    judged = judge(drift, kinds, reference, current)
    passed, detail = verdict(drift, judged, "inputs")
    stats_s = time.perf_counter() - t
    html = report_html(judged, reference, current, drift)
    drift_s = time.perf_counter() - t

    t = time.perf_counter()
    gx_passed, gx = validate_frame(spec, spec.primary, current[primary])
    gx_s = time.perf_counter() - t
    print(json.dumps({
        "benchmark": "monitor", "machine": machine(), "rows": args.rows, "reference_rows": len(reference),
        "features": len(kinds), "sample_size": drift.sample_size, "drift_seconds": round(drift_s, 2),
        "drift_statistics_seconds": round(stats_s, 2), "report_bytes": len(html),
        "gx_seconds": round(gx_s, 2), "gx_expectations": gx["expectations"], "read_seconds": round(read_s, 2),
        "drift_vs_read": round(drift_s / read_s, 1), "drifted": [c.column for c in judged.drifted],
        "drift_passed": passed, "gx_passed": gx_passed, "goal_drift_seconds": 30,
    }))


if __name__ == "__main__":
    main()
