"""Features benchmark: Spark clean + features rows/s against a bare Spark read + write of the same raw
data (the baseline, same session, same run); Feast materialization rows/s; online lookup p50/p99 for
one entity from SQLite and from Redis. Prints one JSON line.

The raw lake is generated in the lander's layout straight from the simulator (no broker), so the
figures measure the feature pipeline alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctloop.config.settings import load_settings  # noqa: E402
from ctloop.config.spec import parse_spec  # noqa: E402
from ctloop.features.clean import clean_pipeline  # noqa: E402
from ctloop.features.spark import spark_session, spark_uri  # noqa: E402
from ctloop.features.views import build_features  # noqa: E402
from ctloop.ingest.manifests import landed_span  # noqa: E402
from ctloop.lake.paths import raw_prefix  # noqa: E402
from ctloop.lake.store import LocalLake  # noqa: E402

from benchmarks.machine import machine  # noqa: E402
from tests.features_helpers import write_simulated_lake  # noqa: E402


def _lookups(store, spec, card: str, n: int) -> dict[str, float]:
    service = store.get_feature_service(spec.feature_service)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[{"card_id": card, "merchant_id": "none"}]).to_dict()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(times[int(0.99 * (n - 1))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 1_000_000)))
    parser.add_argument("--days", type=float, default=14, help="simulated span of the events")
    parser.add_argument("--materialize-days", type=int, default=2, help="days of feature rows materialized")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctloop-bench-features-"))
    try:
        data = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
        data["simulator"]["params"]["days"] = args.days
        spec = parse_spec(data, "pipelines/fraud.yaml")
        lake = LocalLake(work / "lake")
        t = time.monotonic()
        tables = write_simulated_lake(lake, spec, args.events, seed=11, partitions=4)
        raw_rows = sum(tb.num_rows for tb in tables.values())
        print(f"[bench] generated {raw_rows} raw rows in {time.monotonic() - t:.0f}s", file=sys.stderr, flush=True)
        settings = load_settings(state_dir=work / "state", lake_uri=lake.uri, feast_project=f"b{uuid.uuid4().hex[:8]}",
                                 spark_shuffle_partitions=int(os.environ.get("BENCH_SHUFFLE", 8)))
        spark = spark_session(settings, "ctloop-bench-features")
        start, end = landed_span(lake, spec)

        # baseline: read every raw file and write it back out, nothing else
        t = time.monotonic()
        for event in spec.events.values():
            raw = spark.read.parquet(spark_uri(lake, raw_prefix(spec.name, event.topic)))
            raw.write.mode("overwrite").parquet(str(work / "baseline" / event.topic))
        baseline_s = time.monotonic() - t

        t = time.monotonic()
        cleaned = clean_pipeline(spark, spec, lake, start, end)
        clean_s = time.monotonic() - t
        t = time.monotonic()
        feats = build_features(spark, spec, lake, start, end)
        features_s = time.monotonic() - t
        pipeline_rows_s = raw_rows / (clean_s + features_s)
        baseline_rows_s = raw_rows / baseline_s
        spark.stop()

        from ctloop.features.materialize import materialize
        from ctloop.features.store import open_store

        mat_end = start + timedelta(days=args.materialize_days)
        result = {}
        for online in ("sqlite", "redis"):
            s = load_settings(**{**settings.model_dump(), "feast_online_store": online,
                                 "feast_redis": "127.0.0.1:6379,db=5",
                                 "feast_project": f"b{uuid.uuid4().hex[:8]}"})
            store = open_store(s, spec)
            mat = materialize(spec, s, lake, start, mat_end, store)
            card = tables["transactions"]["card_id"][0].as_py()
            result[online] = {"materialize_rows": mat["rows"], "materialize_rows_per_s": mat["rows_per_s"],
                              "lookup": _lookups(store, spec, card, args.lookups)}
        print(json.dumps({
            "benchmark": "features", "machine": machine(), "spark_master": settings.spark_master,
            "events": args.events, "raw_rows": raw_rows,
            "clean_seconds": round(clean_s, 1), "features_seconds": round(features_s, 1),
            "feature_rows": {v: d["rows"] for v, d in feats["views"].items()},
            "curated_rows": {s: d["rows"] for s, d in cleaned["streams"].items()},
            "clean_features_rows_per_s": round(pipeline_rows_s),
            "baseline": "bare Spark read + write of the same raw lake",
            "baseline_seconds": round(baseline_s, 1), "baseline_rows_per_s": round(baseline_rows_s),
            "ratio_vs_baseline": round(pipeline_rows_s / baseline_rows_s, 3),
            "materialize_days": args.materialize_days,
            "sqlite": result["sqlite"], "redis": result["redis"],
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
