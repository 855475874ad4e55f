"""Data-path benchmark: raw lake → curated → features → online store → training snapshot, each step
timed, against a bare Spark read + write of the same raw data (the baseline, same session, same run).
Also materialize rows/s and training-set rows/s, each against reading the same rows with pyarrow, and
the online lookup p50/p99 for one entity from SQLite and from Redis. Prints one JSON line.

The raw lake is generated in the lander's layout straight from the simulator (no broker), so the
figures measure the data path alone. ``data_path_ratio`` = baseline seconds / data-path seconds (goal ≥ 0.3).
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
from ctloop.lake.paths import curated_prefix, features_prefix, raw_prefix  # noqa: E402
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


def _step(name: str, seconds: float) -> None:
    print(f"[bench] {name}: {seconds:.1f}s", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 1_000_000)))
    parser.add_argument("--days", type=float, default=45, help="simulated span of the events")
    parser.add_argument("--partitions", type=int, default=4, help="Kafka partitions the raw files come from")
    parser.add_argument("--segment", type=int, default=5000, help="records per landed batch (the lander's segments)")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()

    from ctloop.features.materialize import materialize
    from ctloop.features.store import open_store
    from ctloop.training.training_set import build_training_set, latest_window

    work = Path(tempfile.mkdtemp(prefix="ctloop-bench-features-"))
    try:
        data = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())
        data["simulator"]["params"]["days"] = args.days
        spec = parse_spec(data, "pipelines/fraud.yaml")
        lake = LocalLake(work / "lake")
        t = time.monotonic()
        tables = write_simulated_lake(lake, spec, args.events, seed=11, partitions=args.partitions,
                                      segment=args.segment)
        raw_rows = sum(tb.num_rows for tb in tables.values())
        raw_files = sum(1 for p in lake.list("raw/") if p.endswith(".parquet"))
        _step(f"generated {raw_rows} raw rows in {raw_files} files", time.monotonic() - t)
        settings = load_settings(state_dir=work / "state", lake_uri=lake.uri, feast_project=f"b{uuid.uuid4().hex[:8]}",
                                 spark_shuffle_partitions=int(os.environ.get("BENCH_SHUFFLE", 8)))
        spark = spark_session(settings, "ctloop-bench-features")
        start, end = landed_span(lake, spec)

        # baseline: read every raw file and write it back out, nothing else
        t = time.monotonic()
        for event in spec.events.values():
            if not lake.list(raw_prefix(spec.name, event.topic) + "/"):
                continue
            raw = spark.read.parquet(spark_uri(lake, raw_prefix(spec.name, event.topic)))
            raw.write.mode("overwrite").parquet(str(work / "baseline" / event.topic))
        baseline_s = time.monotonic() - t
        _step("baseline (bare Spark read + write)", baseline_s)

        seconds: dict[str, float] = {}
        t = time.monotonic()
        cleaned = clean_pipeline(spark, spec, lake, start, end)
        seconds["clean"] = time.monotonic() - t
        _step("clean", seconds["clean"])
        t = time.monotonic()
        feats = build_features(spark, spec, lake, start, end)
        seconds["features"] = time.monotonic() - t
        _step("features", seconds["features"])
        spark.stop()

        store = open_store(settings, spec)
        t = time.monotonic()
        mat = materialize(spec, settings, lake, start, end, store)
        seconds["materialize"] = time.monotonic() - t
        _step(f"materialize {mat['rows']} rows", seconds["materialize"])
        t = time.monotonic()
        feature_rows = sum(lake.dataset(features_prefix(spec.name, v)).to_table().num_rows for v in spec.features.views)
        arrow_feature_s = time.monotonic() - t

        w_start, w_end, as_of = latest_window(lake, spec)
        t = time.monotonic()
        snap = build_training_set(spec, settings, lake, w_start, w_end, as_of, store=store)
        seconds["training_set"] = time.monotonic() - t
        _step(f"training set {snap['row_count']} rows", seconds["training_set"])
        t = time.monotonic()  # the rows the join reads: the window's events and every view's feature rows
        lake.dataset(curated_prefix(spec.name, spec.primary)).to_table()
        for view in spec.features.views:
            lake.dataset(features_prefix(spec.name, view)).to_table()
        arrow_snapshot_s = time.monotonic() - t

        data_path_s = sum(seconds.values())
        result = {}
        for online in ("sqlite", "redis"):
            s = load_settings(**{**settings.model_dump(), "feast_online_store": online,
                                 "feast_redis": "127.0.0.1:6379,db=5", "feast_project": f"b{uuid.uuid4().hex[:8]}"})
            online_store = store if online == "sqlite" else open_store(s, spec)
            card = tables["transactions"]["card_id"][0].as_py()
            result[online] = _lookups(online_store, spec, card, args.lookups)
        print(json.dumps({
            "benchmark": "features", "machine": machine(), "spark_master": settings.spark_master,
            "events": args.events, "days": args.days, "raw_rows": raw_rows, "raw_files": raw_files,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "data_path_seconds": round(data_path_s, 1),
            "baseline": "bare Spark read + write of the same raw lake",
            "baseline_seconds": round(baseline_s, 1),
            "data_path_ratio": round(baseline_s / data_path_s, 3),
            "curated_rows": {s: d["rows"] for s, d in cleaned["streams"].items()},
            "feature_rows": {v: d["rows"] for v, d in feats["views"].items()},
            "materialize_rows": mat["rows"], "materialize_rows_per_s": round(mat["rows"] / seconds["materialize"]),
            "materialize_arrow_read_rows_per_s": round(feature_rows / arrow_feature_s),
            "training_set_rows": snap["row_count"],
            "training_set_rows_per_s": round(snap["row_count"] / seconds["training_set"]),
            "training_set_arrow_read_rows_per_s": round(snap["row_count"] / arrow_snapshot_s),
            "online_lookup_sqlite": result["sqlite"], "online_lookup_redis": result["redis"],
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
