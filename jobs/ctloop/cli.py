"""The ``ctloop`` command: every job Airflow launches and every action a person runs by hand.

Each subcommand takes explicit arguments, prints progress to stderr and a JSON summary to stdout,
and exits 2 with a one-paragraph message when its input or environment is wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ctloop.settings import Settings, SettingsError, load_settings
from ctloop.spec import SpecError, load_spec


def _json_safe(value: Any) -> Any:
    """NaN and infinities (an undefined metric, say) as null: JSON has no such numbers and XCom refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _emit(args: argparse.Namespace, data: Any) -> None:
    """Print the command's JSON summary; with ``--result-file`` also write it there (Airflow's XCom)."""
    text = json.dumps(_json_safe(data), indent=2, default=str, allow_nan=False)
    print(text)
    if args.result_file:
        path = Path(args.result_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.stack import Stack

    stack = Stack(settings)
    if args.action == "up":
        rows = stack.up()
    elif args.action == "down":
        rows = stack.down()
    else:
        rows = stack.status()
    if args.json:
        _emit(args, rows)
    else:
        for row in rows:
            pid = row["pid"] or "-"
            print(f"{row['service']:<22} {row['state']:<10} {row['url']:<38} pid={pid:<8} log={row['log']}")
    if args.action == "up" and any(r["service"] == "airflow-api-server" for r in rows):
        from ctloop.airflow_local import login

        user, password = login(settings)
        print(f"Airflow UI and REST API: {settings.airflow_api_url}  login: {user} / {password}", file=sys.stderr)
    return 0 if args.action == "down" or all(r["state"] == "running" for r in rows) else 1


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.produce import produce

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    _emit(args, produce(spec, settings, events=args.events, seed=args.seed, rate=args.rate,
                        bad_fraction=args.bad_fraction, drift_at=args.drift_at, drift_kind=args.drift_kind))
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.ingest import land
    from ctloop.lake import open_lake

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    mode = "follow" if args.follow else "until_caught_up"
    _emit(args, land(spec, settings, open_lake(settings), mode, max_seconds=args.max_seconds))
    return 0


def cmd_spec(args: argparse.Namespace, settings: Settings) -> int:
    names = args.pipelines or sorted(p.stem for p in settings.pipelines_dir.glob("*.yaml"))
    if not names:
        raise SpecError(f"{settings.pipelines_dir}: no pipeline specs found")
    for name in names:
        spec = load_spec(name, settings.pipelines_dir)
        streams = ", ".join(f"{n} ({e.topic}, {len(e.fields)} fields)" for n, e in spec.events.items())
        print(f"{spec.name}: ok — spec hash {spec.spec_hash}; events: {streams}")
    return 0


def cmd_spark(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.lake import open_lake
    from ctloop.spark_jobs import build_features, clean_pipeline, parse_interval, spark_session

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    start, end = parse_interval(args.start, args.end)
    if args.job == "features" and spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so there is nothing to compute")
    spark = spark_session(settings, f"ctloop-{args.job}-{spec.name}")
    job = clean_pipeline if args.job == "clean" else build_features
    _emit(args, job(spark, spec, open_lake(settings), start, end))
    return 0


def cmd_materialize(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.lake import open_lake
    from ctloop.materialize import materialize
    from ctloop.spark_jobs import parse_interval

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    start, end = parse_interval(args.start, args.end)
    _emit(args, materialize(spec, settings, open_lake(settings), start, end))
    return 0


def cmd_training_set(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.lake import open_lake
    from ctloop.spark_jobs import parse_interval
    from ctloop.training_set import build_training_set, latest_window

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    lake = open_lake(settings)
    if args.latest:
        if args.start or args.end or args.as_of:
            raise ValueError("--latest decides --start, --end and --as-of from the landed data; give one or the other")
        start, end, as_of = latest_window(lake, spec)
    else:
        if not (args.start and args.end):
            raise ValueError("give --start and --end (or --latest)")
        start, end = parse_interval(args.start, args.end)
        as_of = parse_interval(args.as_of, "9999-01-01")[0] if args.as_of else None
    _emit(args, build_training_set(spec, settings, lake, start, end, as_of))
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.lake import open_lake
    from ctloop.train import train

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    _emit(args, train(spec, settings, open_lake(settings), args.dataset))
    return 0


def cmd_quality(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.lake import open_lake
    from ctloop.quality import check_snapshot

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    _emit(args, check_snapshot(spec, open_lake(settings), args.dataset))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.evaluate import evaluate
    from ctloop.lake import open_lake

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    _emit(args, evaluate(spec, settings, open_lake(settings), args.run_id))
    return 0


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.registry import register

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    _emit(args, register(spec, settings, args.run_id))
    return 0


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop.registry import client, current_version, history, last_known_good, move_alias

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    model = spec.registered_model
    if args.action == "set-alias":
        if not (args.alias and args.version and args.reason):
            raise ValueError("set-alias needs --alias, --version and --reason (the reason is recorded)")
        _emit(args, move_alias(settings, model, args.alias, args.version, args.reason))
        return 0
    mlflow_client = client(settings)
    _emit(args, {"model": model, "champion": current_version(mlflow_client, model, "champion"),
                 "challenger": current_version(mlflow_client, model, "challenger"),
                 "last_known_good": last_known_good(settings, model),
                 "moves": history(settings, model, args.alias)})
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from ctloop import retrain

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    if args.action == "request":
        from kafka import KafkaProducer

        from ctloop.broker import client_config, connect

        producer = connect(lambda: KafkaProducer(**client_config(settings), acks="all"), settings, "retrain")
        try:
            sent = producer.send(settings.retrain_topic, retrain.request_message(spec.name, args.reason,
                                                                                 args.requested_by)).get(30)
        finally:
            producer.close()
        _emit(args, {"topic": sent.topic, "partition": sent.partition, "offset": sent.offset, "pipeline": spec.name,
                     "reason": args.reason, "requested_by": args.requested_by})
        return 0
    from ctloop.lake import open_lake

    ledger = retrain.Ledger(open_lake(settings), spec.name)
    if args.action == "ledger":
        _emit(args, ledger.records())
        return 0
    if not (args.run_id and args.now):
        raise ValueError(f"retrain {args.action}: give --run-id and --now")
    now = retrain.parse_time(args.now)
    if args.action == "decide":
        requests = [retrain.RetrainRequest.from_dict(r, pipeline=spec.name) for r in json.loads(args.requests or "[]")]
        policy = retrain.Policy.from_spec(spec.retrain)
        _emit(args, retrain.record_decisions(ledger, policy, requests, run_id=args.run_id, now=now))
    else:
        results = json.loads(args.results or "{}")
        _emit(args, retrain.record_finish(ledger, pipeline=spec.name, run_id=args.run_id, results=results, now=now))
    return 0


def _settle(client: Any, dag_id: str, *, since: str, timeout_s: float, stage: Any) -> list[dict[str, Any]]:
    """Wait until ``dag_id`` has run since ``since`` and nothing of it is queued or running; its runs, oldest first."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        runs = [r for r in client.runs(dag_id, limit=50) if (r.get("queued_at") or r["run_after"]) >= since]
        for run in runs:
            if seen.get(run["dag_run_id"]) != run["state"]:
                seen[run["dag_run_id"]] = run["state"]
                print(f"[demo] {dag_id} {run['dag_run_id']}: {run['state']}", file=sys.stderr, flush=True)
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            stage(dag_id)
            return sorted(runs, key=lambda r: r["run_after"])
        time.sleep(5)
    raise TimeoutError(f"{dag_id}: runs still unfinished after {timeout_s:.0f}s: {seen}")


def _task_seconds(tasks: list[dict[str, Any]]) -> dict[str, float | str]:
    """Each task's run time (or its state when it did not run) so a slow stage points at its task."""
    return {t["task_id"]: round(t["duration"], 1) if t.get("duration") is not None else t.get("state")
            for t in sorted(tasks, key=lambda t: t.get("start_date") or "~")}


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The loop on the embedded stack, driven through Airflow: DAG runs, not direct function calls."""
    from datetime import UTC, datetime

    from ctloop.airflow_client import AirflowClient
    from ctloop.airflow_local import login
    from ctloop.produce import produce
    from ctloop.registry import client as mlflow_client
    from ctloop.registry import current_version, history
    from ctloop.stack import Stack

    timings: dict[str, float] = {}
    started = time.monotonic()

    def stage(name: str) -> None:
        timings[name] = round(time.monotonic() - started - sum(timings.values()), 2)
        print(f"[demo] {name} done in {timings[name]}s", file=sys.stderr, flush=True)

    spec = load_spec(args.pipeline, settings.pipelines_dir)
    name = spec.name
    since = datetime.now(UTC).isoformat()  # every DAG run queued from here on is this demo's (schedules included)
    print(f"[demo] starting the embedded stack under {settings.state_dir} (first start: ~1 min)",
          file=sys.stderr, flush=True)
    # the events go in before Airflow starts: the ingest schedule's first run then lands all of them, and
    # features runs once instead of once per partial landing
    Stack(settings, [g for g in settings.stack_groups if g != "airflow"]).up(timeout_s=300)
    produced = produce(spec, settings, events=args.events, seed=args.seed, bad_fraction=args.bad_fraction)
    stage("produce")
    stack_rows = Stack(settings).up(timeout_s=300)
    stage("stack_up")
    user, password = login(settings)
    print(f"[demo] Airflow UI {settings.airflow_api_url} (login {user} / {password}); MLflow UI "
          f"{settings.mlflow_tracking_uri}", file=sys.stderr, flush=True)
    client = AirflowClient.local(settings)
    # ingest lands the events (unless its schedule already did) and its raw asset event starts features
    client.trigger(f"{name}_ingest", {"reason": "make demo"})
    ingest = _settle(client, f"{name}_ingest", since=since, timeout_s=1200, stage=stage)  # its schedule may land too
    features = _settle(client, f"{name}_features", since=since, timeout_s=2400, stage=stage)
    # the train DAG is paused at creation, so it never trains on an empty lake; unpausing it may start its
    # scheduled run, and the request below is then merged into it by the retrain policy
    since = datetime.now(UTC).isoformat()
    client.set_paused(f"{name}_train", False)
    client.trigger(f"{name}_train", {"reason": "make demo: features are ready"})
    train = _settle(client, f"{name}_train", since=since, timeout_s=2400, stage=stage)
    runs = {"ingest": ingest, "features": features, "train": train}
    tasks = {(dag, r["dag_run_id"]): client.task_instances(f"{name}_{dag}", r["dag_run_id"])
             for dag, rs in runs.items() for r in rs}
    failed = [f"{dag} {r['dag_run_id']}" for dag, rs in runs.items() for r in rs if r["state"] != "success"]
    trained = [r for r in train if r["state"] == "success" and any(
        t["task_id"] == "register" and t["state"] == "success" for t in tasks["train", r["dag_run_id"]])]
    evaluation = client.xcom(f"{name}_train", trained[-1]["dag_run_id"], "evaluate") if trained else None
    lands = [client.xcom(f"{name}_ingest", r["dag_run_id"], "land") for r in ingest if r["state"] == "success"]
    model = spec.registered_model
    registry = mlflow_client(settings)
    summary = {
        "pipeline": name, "spec_hash": spec.spec_hash, "runtime": settings.runtime, "lake": settings.lake_uri,
        "stack": {r["service"]: r["url"] for r in stack_rows},
        "produced": {t: v["counts"] for t, v in produced["topics"].items()},
        "landed": {k: sum(land[k] for land in lands) for k in ("landed", "dead_letters", "files")},
        "dag_runs": {dag: [{"run_id": r["dag_run_id"], "state": r["state"], "note": r.get("note"),
                            "task_seconds": _task_seconds(tasks[dag, r["dag_run_id"]])}
                           for r in rs] for dag, rs in runs.items()},
        "model": {"name": model, "challenger": current_version(registry, model, "challenger"),
                  "champion": current_version(registry, model, "champion"),
                  "alias_moves": history(settings, model)[:5]},
        "gate": ({"passed": evaluation["passed"], "reasons": evaluation["reasons"],
                  "candidate": evaluation["candidate"]["overall"], "mlflow_run": evaluation["run_id"]}
                 if evaluation else None),
        "stage_seconds": timings, "total_seconds": round(time.monotonic() - started, 2),
    }
    out = settings.state_dir / "demo-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    _emit(args, summary)
    print(f"[demo] summary written to {out}; Airflow {settings.airflow_api_url}, MLflow "
          f"{settings.mlflow_tracking_uri}; stop the stack with `make stack-down`", file=sys.stderr)
    if failed or not trained:
        print(f"[demo] the loop did not reach a registered model: failed runs {failed or 'none'}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctloop", description=__doc__.splitlines()[0])
    parser.add_argument("--result-file", metavar="PATH",
                        help="also write the JSON summary to PATH (the operator factory passes Airflow's XCom file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser("stack", help="start, inspect or stop the embedded services (local runtime)")
    stack.add_argument("action", choices=["up", "status", "down"])
    stack.add_argument("--json", action="store_true", help="print the status as JSON")
    stack.set_defaults(func=cmd_stack)

    prod = sub.add_parser("produce", help="send simulated events (and delayed labels) to Kafka")
    prod.add_argument("--pipeline", required=True, help="pipeline name (pipelines/<name>.yaml) or spec path")
    prod.add_argument("--events", type=int, required=True, help="number of primary events to generate")
    prod.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    prod.add_argument("--seed", type=int, default=0, help="same seed, same events (default 0)")
    prod.add_argument("--bad-fraction", type=float, default=0.0,
                      help="share of messages corrupted: malformed JSON, wrong types, missing fields, oversized")
    prod.add_argument("--drift-at", type=int, help="inject drift from this event index on")
    prod.add_argument("--drift-kind", choices=["covariate", "concept"], default="covariate")
    prod.set_defaults(func=cmd_produce)

    ingest = sub.add_parser("ingest", help="land the pipeline's topics in the lake as Parquet, exactly once")
    ingest.add_argument("--pipeline", required=True)
    how = ingest.add_mutually_exclusive_group(required=True)
    how.add_argument("--until-caught-up", action="store_true",
                     help="stop once the end offsets seen at start are landed")
    how.add_argument("--follow", action="store_true", help="keep landing until SIGTERM/SIGINT")
    ingest.add_argument("--max-seconds", type=float, help="stop (cleanly) after this long")
    ingest.set_defaults(func=cmd_ingest)

    spec = sub.add_parser("spec", help="validate pipeline specs")
    spec.add_argument("pipelines", nargs="*", help="pipeline names (default: every spec in CTLOOP_PIPELINES_DIR)")
    spec.set_defaults(func=cmd_spec)

    spark = sub.add_parser("spark", help="Spark jobs: clean (raw → curated) and features (curated → features)")
    spark.add_argument("job", choices=["clean", "features"])
    spark.add_argument("--pipeline", required=True)
    spark.add_argument("--start", required=True, help="interval start (inclusive), ISO date or datetime, whole hour")
    spark.add_argument("--end", required=True, help="interval end (exclusive)")
    spark.set_defaults(func=cmd_spark)

    mat = sub.add_parser("materialize", help="load the interval's feature rows into the Feast online store")
    mat.add_argument("--pipeline", required=True)
    mat.add_argument("--start", required=True)
    mat.add_argument("--end", required=True)
    mat.set_defaults(func=cmd_materialize)

    tset = sub.add_parser("training-set", help="build a labelled point-in-time training-set snapshot")
    tset.add_argument("--pipeline", required=True)
    tset.add_argument("--start", help="first event time (inclusive)")
    tset.add_argument("--end", help="last event time (exclusive)")
    tset.add_argument("--as-of", help="labels known at this time (default: --end)")
    tset.add_argument("--latest", action="store_true",
                      help="the newest window with mature labels: model.training_window long, ending "
                           "labels.maturity_days before the end of the landed data")
    tset.set_defaults(func=cmd_training_set)

    retr = sub.add_parser("retrain", help="retrain requests and the retrain policy's ledger (docs/airflow.md)")
    retr.add_argument("action", choices=["request", "decide", "finish", "ledger"],
                      help="request: send one to the Kafka topic; decide/finish: the train DAG's policy steps; "
                           "ledger: print every decision")
    retr.add_argument("--pipeline", required=True)
    retr.add_argument("--reason", default="requested by hand", help="request: why")
    retr.add_argument("--requested-by", default="cli", help="request: who")
    retr.add_argument("--run-id", help="decide/finish: the train DAG run")
    retr.add_argument("--now", help="decide/finish: the run's time (ISO); the policy never reads the clock")
    retr.add_argument("--requests", help="decide: JSON list of requests ({reason, requested_by, requested_at, source})")
    retr.add_argument("--results", help="finish: JSON {quality, evaluation, registered} of the run's jobs")
    retr.set_defaults(func=cmd_retrain)

    train = sub.add_parser("train", help="train the pipeline's Keras model on a snapshot and log it to MLflow")
    train.add_argument("--pipeline", required=True)
    train.add_argument("--dataset", required=True, help="training-set snapshot id (from `ctloop training-set`)")
    train.set_defaults(func=cmd_train)

    quality = sub.add_parser("quality", help="Great Expectations checks of a training-set snapshot")
    quality.add_argument("--pipeline", required=True)
    quality.add_argument("--dataset", required=True, help="training-set snapshot id")
    quality.set_defaults(func=cmd_quality)

    evaluate = sub.add_parser("evaluate", help="score candidate and champion on the same holdout; apply the gate")
    evaluate.add_argument("--pipeline", required=True)
    evaluate.add_argument("--run-id", required=True, help="MLflow run id of the candidate (from `ctloop train`)")
    evaluate.set_defaults(func=cmd_evaluate)

    register = sub.add_parser("register", help="infra-check and register a gated candidate as `challenger`")
    register.add_argument("--pipeline", required=True)
    register.add_argument("--run-id", required=True)
    register.set_defaults(func=cmd_register)

    registry = sub.add_parser("registry", help="the registered model's aliases and the record of their moves")
    registry.add_argument("action", choices=["history", "set-alias"])
    registry.add_argument("--pipeline", required=True)
    registry.add_argument("--alias", help="history: only this alias; set-alias: the alias to move")
    registry.add_argument("--version", help="set-alias: the model version")
    registry.add_argument("--reason", help="set-alias: why (recorded with who and when)")
    registry.set_defaults(func=cmd_registry)

    demo = sub.add_parser("demo", help="run the loop end to end on the embedded stack, through Airflow DAG runs")
    demo.add_argument("--pipeline", default="fraud")
    demo.add_argument("--events", type=int, default=100_000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--bad-fraction", type=float, default=0.02)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ctloop.broker import BrokerUnavailable
    from ctloop.stack import StackError

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter drowns the progress lines
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (SettingsError, SpecError, StackError, BrokerUnavailable, ValueError) as exc:
        print(f"ctloop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        mlflow_errors = sys.modules.get("mlflow.exceptions")  # imported only by the commands that use MLflow
        if mlflow_errors is not None and isinstance(exc, mlflow_errors.MlflowException):
            print(f"ctloop {args.command}: MLflow error: {exc.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
