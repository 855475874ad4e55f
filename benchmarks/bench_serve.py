"""Serving benchmark: latency through the local traffic switch at a fixed open-loop rate, against the same
requests sent straight to the slot and the same work done in-process; throughput at saturation with and
without dynamic batching. Prints one JSON line.

The stack is the real one (`ctloop stack up` services: broker, MLflow, the switch with its slots), the model
a registered version of the reference spec trained on a synthetic snapshot, the features real Feast online
lookups (SQLite) of entities materialized from that snapshot, and every prediction is logged to Kafka as in
production. Each request carries one row (id, entity keys, request fields), so every request is one
feature lookup and one model call.

* through the switch: ``--rate`` requests/s for ``--seconds`` (open loop: requests leave on schedule
  whatever the answers do; latency counts from the scheduled time), after a warm-up;
* direct: the same load on the live slot's own port, no switch: the difference is what the switch adds;
* baseline: ``ctloop.serving.scorer.Scorer.score_rows`` on the same rows, one at a time, in this process:
  the feature lookup and the model call without HTTP, batching or logging;
* saturation: ``--workers`` closed-loop clients on the slot, with the spec's batching and with
  ``serving.max_batch_size: 1`` (a second slot process), ``--saturation-seconds`` each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from ctloop.config.settings import load_settings  # noqa: E402
from ctloop.config.spec import load_spec  # noqa: E402
from ctloop.lake.store import open_lake  # noqa: E402
from ctloop.stack.service import free_port, http_healthy  # noqa: E402
from ctloop.stack.supervisor import Stack  # noqa: E402

from benchmarks.machine import machine  # noqa: E402
from benchmarks.serve_world import (  # noqa: E402
    ClosedLoop,
    OpenLoop,
    conform,
    infer_bodies,
    train_version,
    write_feature_rows,
)
from tests.conftest import make_pipeline  # noqa: E402

DAYS = 20


def log(message: str) -> None:
    print(f"[bench-serve] {message}", file=sys.stderr, flush=True)


def in_process(spec, settings, version: str, frame, n: int) -> dict:  # noqa: ANN001
    """The same lookup + model call as a request, without HTTP: Scorer.score_rows on one row at a time."""
    from ctloop.serving.scorer import Scorer

    primary = spec.events[spec.primary]
    keys = list(dict.fromkeys(spec.features.entities[v.entity].join_key for v in spec.features.views.values()))
    names = list(dict.fromkeys([primary.id_field, *keys, *spec.model.request_fields]))
    rows = [{k: r[k] for k in names} for r in frame.head(n).to_dict("records")]
    scorer = Scorer(spec, settings, version=version)
    for row in rows[:50]:
        scorer.score_rows([row])
    latencies = []
    for row in rows:
        t = time.perf_counter()
        scorer.score_rows([row])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    return {"calls": len(rows), "p50_ms": round(latencies[len(latencies) // 2], 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 3), "max_ms": round(latencies[-1], 3)}


def main() -> None:
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # MLflow and Feast print progress; stdout is the JSON line's
        result = measure()
    print(json.dumps(result))


def measure() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=float(os.environ.get("BENCH_RATE", 200)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 60)))
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--saturation-seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=64, help="closed-loop clients at saturation")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the synthetic snapshot")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctloop-bench-serve-"))
    pipelines, _ = make_pipeline(work, **{"model.registered_name": f"ctloop-bench-serve-{os.getpid()}",
                                          "model.max_epochs": 3, "model.patience": 3})
    broker = free_port()
    settings = load_settings(state_dir=work / "state", pipelines_dir=pipelines, broker_port=broker,
                             kafka_bootstrap=f"127.0.0.1:{broker}", mlflow_port=free_port(), serving_port=free_port())
    base = Stack(settings, ["broker", "mlflow"])
    serving = Stack(settings, ["serving"])
    unbatched = None
    base.up(timeout_s=120)
    try:
        from ctloop.features.materialize import materialize
        from ctloop.registry.aliases import move_alias
        from ctloop.serving.auth import ensure_token
        from ctloop.sim.simulator import synthetic_training_frame

        spec = load_spec("fraud", settings.pipelines_dir)
        lake = open_lake(settings)
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
        frame = conform(spec, synthetic_training_frame(spec, args.rows, seed=3, start=start, days=DAYS))
        log(f"training and registering a model on {args.rows:,} rows")
        version = train_version(spec, settings, lake, "bench", frame, start, DAYS)
        write_feature_rows(lake, spec, frame)
        materialize(spec, settings, lake, start, start + timedelta(days=DAYS))
        move_alias(settings, spec.registered_model, "champion", version, "bench-serve")
        token = ensure_token(settings)
        log("starting the switch, which serves the champion in its blue slot")
        serving.up(timeout_s=300)
        state = httpx.get(f"http://127.0.0.1:{settings.serving_port}/admin/state",
                          headers={"Authorization": f"Bearer {token}"}).json()
        slot_port = state["pipelines"]["fraud"]["slots"]["blue"]["port"]
        bodies = infer_bodies(spec, frame.sample(frac=1.0, random_state=1), 4000)
        path = "/v2/models/fraud/infer"

        def open_loop(port: int, seconds: float) -> dict:
            return OpenLoop("127.0.0.1", port, path, bodies, token=token, rate=args.rate).run(seconds).summary()

        log(f"warm-up {args.warmup:.0f}s, then {args.rate:.0f} requests/s for {args.seconds:.0f}s through the switch")
        open_loop(settings.serving_port, args.warmup)
        switch = open_loop(settings.serving_port, args.seconds)
        log(f"through the switch: {switch}")
        direct = open_loop(slot_port, args.seconds)
        log(f"direct to the slot: {direct}")
        saturation = ClosedLoop("127.0.0.1", slot_port, path, bodies, token=token,
                                workers=args.workers).run(args.saturation_seconds)
        log(f"saturation with batching (max_batch_size {spec.serving.max_batch_size}): {saturation}")
        through = ClosedLoop("127.0.0.1", settings.serving_port, path, bodies, token=token,
                             workers=args.workers).run(args.saturation_seconds)
        log(f"saturation with batching, through the switch: {through}")
        # the same slot without dynamic batching: a second process on a spec with max_batch_size 1
        nobatch_dir = work / "pipelines-nobatch"
        nobatch_dir.mkdir()
        data = yaml.safe_load((pipelines / "fraud.yaml").read_text())  # same topics and model, no batching
        data["serving"]["max_batch_size"] = 1
        (nobatch_dir / "fraud.yaml").write_text(yaml.safe_dump(data))
        port = free_port()
        env = {**os.environ, **settings.to_env(), "CTLOOP_PIPELINES_DIR": str(nobatch_dir),
               "CTLOOP_STATE_DIR": str(settings.state_dir.resolve())}
        unbatched = subprocess.Popen([sys.executable, "-m", "ctloop.cli", "serve", "slot", "--pipeline", "fraud",
                                      "--slot", "green", "--port", str(port), "--version", version],
                                     env=env, stdout=subprocess.DEVNULL, stderr=open(work / "nobatch.log", "wb"))
        deadline = time.monotonic() + 300
        while not http_healthy(f"http://127.0.0.1:{port}/v2/health/ready"):
            if time.monotonic() > deadline or unbatched.poll() is not None:
                raise RuntimeError(f"the unbatched slot did not start; see {work / 'nobatch.log'}")
            time.sleep(0.5)
        ClosedLoop("127.0.0.1", port, path, bodies, token=token, workers=args.workers).run(3)  # warm-up
        no_batching = ClosedLoop("127.0.0.1", port, path, bodies, token=token,
                                 workers=args.workers).run(args.saturation_seconds)
        log(f"saturation without batching: {no_batching}")
        unbatched.terminate()
        unbatched.wait(30)
        unbatched = None
        baseline = in_process(spec, settings, version, frame.sample(frac=1.0, random_state=1), 2000)
        log(f"in-process baseline: {baseline}")
    finally:
        if unbatched is not None:
            unbatched.kill()
        serving.down()
        base.down()
    result = {
        "bench": "serve", "rate_rps": args.rate, "seconds": args.seconds, "sent": switch["sent"],
        "failed": switch["failed"] + direct["failed"], "achieved_rps": switch["achieved_rps"],
        "p50_ms": switch["p50_ms"], "p99_ms": switch["p99_ms"], "max_ms": switch["max_ms"],
        "direct_p50_ms": direct["p50_ms"], "direct_p99_ms": direct["p99_ms"], "direct_max_ms": direct["max_ms"],
        "switch_adds_p50_ms": round(switch["p50_ms"] - direct["p50_ms"], 3),
        "switch_adds_p99_ms": round(switch["p99_ms"] - direct["p99_ms"], 3),
        "baseline": "in-process Scorer.score_rows, one row per call (same lookup + model call, no HTTP)",
        "baseline_in_process_p50_ms": baseline["p50_ms"], "baseline_in_process_p99_ms": baseline["p99_ms"],
        "saturation_rps_batching": saturation["rps"], "saturation_rps_batching_through_switch": through["rps"],
        "saturation_rps_no_batching": no_batching["rps"], "saturation_workers": args.workers,
        "saturation_p99_ms": {"batching": saturation["p99_ms"], "no_batching": no_batching["p99_ms"]},
        "max_batch_size": spec.serving.max_batch_size, "max_wait_ms": spec.serving.max_wait_ms,
        "goal_p99_ms": 10, "machine": machine(),
    }
    return result


if __name__ == "__main__":
    main()
