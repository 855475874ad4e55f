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
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctloop.config.settings import Settings, SettingsError, load_settings
from ctloop.config.spec import PipelineSpec, SpecError, load_spec

if TYPE_CHECKING:
    from ctloop.lake.store import Lake


def _json_safe(value: Any) -> Any:
    """NaN and infinities (an undefined metric, say) as null: JSON has no such numbers and XCom refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class Context:
    """What every command needs: its arguments, the settings, and (loaded on first use) its spec and lake."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings

    @cached_property
    def spec(self) -> PipelineSpec:
        return load_spec(self.args.pipeline, self.settings.pipelines_dir)

    @cached_property
    def lake(self) -> Lake:
        from ctloop.lake.store import open_lake

        return open_lake(self.settings)

    def interval(self) -> tuple[datetime, datetime]:
        from ctloop.lake.hours import parse_interval

        return parse_interval(self.args.start, self.args.end)

    def emit(self, data: Any) -> int:
        """Print the command's JSON summary; with ``--result-file`` also write it there (Airflow's XCom)."""
        text = json.dumps(_json_safe(data), indent=2, default=str, allow_nan=False)
        print(text)
        if self.args.result_file:
            path = Path(self.args.result_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return 0


def cmd_stack(ctx: Context) -> int:
    from ctloop.stack.supervisor import Stack

    args, settings = ctx.args, ctx.settings
    stack = Stack(settings)
    rows = {"up": stack.up, "down": stack.down, "status": stack.status}[args.action]()
    if args.json:
        ctx.emit(rows)
    else:
        for row in rows:
            pid = row["pid"] or "-"
            print(f"{row['service']:<22} {row['state']:<10} {row['url']:<38} pid={pid:<8} log={row['log']}")
    if args.action == "up" and any(r["service"] == "airflow-api-server" for r in rows):
        from ctloop.stack.airflow import login

        user, password = login(settings)
        print(f"Airflow UI and REST API: {settings.airflow_api_url}  login: {user} / {password}", file=sys.stderr)
    if args.action == "up" and any(r["service"] == "serving-switch" for r in rows):
        print(f"Serving: http://127.0.0.1:{settings.serving_port}/v2/models/<pipeline>  bearer token in "
              f"{settings.serving_token_file}  (`ctloop serve status --pipeline <pipeline>`)", file=sys.stderr)
    return 0 if args.action == "down" or all(r["state"] == "running" for r in rows) else 1


def cmd_produce(ctx: Context) -> int:
    from ctloop.sim.producer import produce

    a = ctx.args
    return ctx.emit(produce(ctx.spec, ctx.settings, events=a.events, seed=a.seed, rate=a.rate,
                            bad_fraction=a.bad_fraction, drift_at=a.drift_at, drift_kind=a.drift_kind))


def cmd_ingest(ctx: Context) -> int:
    args = ctx.args
    if args.all:
        if not args.follow:
            raise ValueError("--all lands every pipeline as a service: use it with --follow")
        from ctloop.ingest.lander import follow_all

        return follow_all(ctx.settings, max_seconds=args.max_seconds)
    if args.announce:
        from ctloop.ingest.announce import announce

        return ctx.emit(announce(ctx.lake, ctx.spec))
    if args.announced is not None:
        from ctloop.ingest.announce import mark_announced

        try:
            cursor = json.loads(args.announced)
        except ValueError:
            cursor = None
        if not isinstance(cursor, dict):
            raise ValueError(f"--announced: expected the JSON object an --announce printed as `cursor`, "
                             f"got {args.announced!r}")
        return ctx.emit(mark_announced(ctx.lake, ctx.spec, cursor))
    from ctloop.ingest.lander import land

    mode = "follow" if args.follow else "until_caught_up"
    return ctx.emit(land(ctx.spec, ctx.settings, ctx.lake, mode, max_seconds=args.max_seconds))


def cmd_spec(ctx: Context) -> int:
    pipelines_dir = ctx.settings.pipelines_dir
    names = ctx.args.pipelines or sorted(p.stem for p in pipelines_dir.glob("*.yaml"))
    if not names:
        raise SpecError(f"{pipelines_dir}: no pipeline specs found")
    for name in names:
        spec = load_spec(name, pipelines_dir)
        streams = ", ".join(f"{n} ({e.topic}, {len(e.fields)} fields)" for n, e in spec.events.items())
        print(f"{spec.name}: ok — spec hash {spec.spec_hash}; events: {streams}")
    return 0


def cmd_spark(ctx: Context) -> int:
    from ctloop.features.clean import clean_pipeline
    from ctloop.features.spark import spark_session
    from ctloop.features.views import build_features

    spec, job = ctx.spec, ctx.args.job
    start, end = ctx.interval()
    if job == "features" and spec.features is None:
        raise SpecError(f"pipeline {spec.name!r}: features: not set, so there is nothing to compute")
    spark = spark_session(ctx.settings, f"ctloop-{job}-{spec.name}")
    run = clean_pipeline if job == "clean" else build_features
    return ctx.emit(run(spark, spec, ctx.lake, start, end))


def cmd_materialize(ctx: Context) -> int:
    from ctloop.features.materialize import materialize

    return ctx.emit(materialize(ctx.spec, ctx.settings, ctx.lake, *ctx.interval()))


def cmd_training_set(ctx: Context) -> int:
    from ctloop.lake.hours import parse_flag
    from ctloop.training.training_set import build_training_set, latest_window

    args = ctx.args
    if args.latest:
        if args.start or args.end or args.as_of:
            raise ValueError("--latest decides --start, --end and --as-of from the landed data; give one or the other")
        start, end, as_of = latest_window(ctx.lake, ctx.spec)
    else:
        if not (args.start and args.end):
            raise ValueError("give --start and --end (or --latest)")
        start, end = ctx.interval()
        as_of = parse_flag("--as-of", args.as_of) if args.as_of else None
    return ctx.emit(build_training_set(ctx.spec, ctx.settings, ctx.lake, start, end, as_of))


def cmd_train(ctx: Context) -> int:
    from ctloop.training.train import train

    return ctx.emit(train(ctx.spec, ctx.settings, ctx.lake, ctx.args.dataset))


def cmd_quality(ctx: Context) -> int:
    args = ctx.args
    if args.action == "check":
        from ctloop.training.data_gate import check_snapshot

        if not args.dataset:
            raise ValueError("quality check: give --dataset (a training-set snapshot id)")
        return ctx.emit(check_snapshot(ctx.spec, ctx.lake, args.dataset))
    from ctloop.monitoring.blocks import acknowledge, blocks

    if args.action == "blocks":
        return ctx.emit(blocks(ctx.lake, ctx.spec.name))
    from datetime import UTC

    from ctloop.lake.hours import parse_flag

    if not (args.interval and args.by):
        raise ValueError("quality ack: give --interval (the blocked interval's start, or START/END) and --by "
                         "(who acknowledges)")
    start, end = _blocked_interval(args.interval)
    if args.end:
        if end is not None:
            raise ValueError("quality ack: --interval already gives the end; leave out --end")
        end = parse_flag("--end", args.end)
    at = parse_flag("--at", args.at) if args.at else datetime.now(UTC)
    return ctx.emit(acknowledge(ctx.lake, ctx.spec.name, start, args.by, args.comment, at, end))


def _blocked_interval(value: str) -> tuple[datetime, datetime | None]:
    """``quality ack --interval``: a start alone, or START/END or START-END, as the blocks and refusals print
    them (ISO; the lake's ``20260101T040000`` stamps too). A start alone is (start, None)."""
    import contextlib

    from ctloop.lake.hours import parse_time

    with contextlib.suppress(ValueError):
        return parse_time(value), None
    splits = []
    for i, sep in enumerate(value):
        if sep in "/-":
            with contextlib.suppress(ValueError):
                splits.append((parse_time(value[:i]), parse_time(value[i + 1:])))
    if len(splits) != 1:
        raise ValueError(f"--interval: expected a start like 2026-01-03T14:00Z or START/END, got {value!r}")
    return splits[0]


def cmd_monitor(ctx: Context) -> int:
    import contextlib

    from ctloop.monitoring.monitor import monitor

    with contextlib.redirect_stdout(sys.stderr):  # GX and MLflow print progress; stdout is the JSON summary's
        result = monitor(ctx.spec, ctx.settings, ctx.lake, *ctx.interval(), reference=ctx.args.reference)
    return ctx.emit(result)


def cmd_evaluate(ctx: Context) -> int:
    from ctloop.evaluation.evaluate import evaluate

    try:
        extra = json.loads(ctx.args.extra_slices or "null") or []
    except ValueError as exc:
        raise ValueError(f"--extra-slices: expected a JSON list of slices ({exc})") from None
    if not isinstance(extra, list):
        raise ValueError("--extra-slices: expected a JSON list of slices like {\"name\", \"field\", \"equals\"}")
    return ctx.emit(evaluate(ctx.spec, ctx.settings, ctx.lake, ctx.args.run_id, extra_slices=extra))


def cmd_register(ctx: Context) -> int:
    from ctloop.registry.register import register

    return ctx.emit(register(ctx.spec, ctx.settings, ctx.args.run_id))


def cmd_registry(ctx: Context) -> int:
    from ctloop.registry.aliases import client, current_version, history, last_known_good, move_alias

    args, settings, model = ctx.args, ctx.settings, ctx.spec.registered_model
    if args.action == "set-alias":
        if not (args.alias and args.version and args.reason):
            raise ValueError("set-alias needs --alias, --version and --reason (the reason is recorded)")
        return ctx.emit(move_alias(settings, model, args.alias, args.version, args.reason))
    mlflow_client = client(settings)
    return ctx.emit({"model": model, "champion": current_version(mlflow_client, model, "champion"),
                     "challenger": current_version(mlflow_client, model, "challenger"),
                     "last_known_good": last_known_good(settings, model),
                     "moves": history(settings, model, args.alias)})


def cmd_retrain(ctx: Context) -> int:
    from ctloop.lake.hours import parse_flag
    from ctloop.retrain.ledger import Ledger, record_decisions, record_finish
    from ctloop.retrain.policy import Policy, RetrainRequest, request_message

    args, settings, spec = ctx.args, ctx.settings, ctx.spec
    if args.action == "request":
        from kafka import KafkaProducer

        from ctloop.ingest.broker import client_config, connect

        producer = connect(lambda: KafkaProducer(**client_config(settings), acks="all"), settings, "retrain")
        try:
            sent = producer.send(settings.retrain_topic,
                                 request_message(spec.name, args.reason, args.requested_by)).get(30)
        finally:
            producer.close()
        return ctx.emit({"topic": sent.topic, "partition": sent.partition, "offset": sent.offset,
                         "pipeline": spec.name, "reason": args.reason, "requested_by": args.requested_by})
    ledger = Ledger(ctx.lake, spec.name)
    if args.action == "ledger":
        return ctx.emit(ledger.records())
    if not (args.run_id and args.now):
        raise ValueError(f"retrain {args.action}: give --run-id and --now")
    now = parse_flag("--now", args.now)
    if args.action == "decide":
        requests = [RetrainRequest.from_dict(r, pipeline=spec.name) for r in json.loads(args.requests or "[]")]
        return ctx.emit(record_decisions(ledger, Policy.from_spec(spec.retrain), requests, run_id=args.run_id,
                                         now=now))
    results = json.loads(args.results or "{}")
    return ctx.emit(record_finish(ledger, pipeline=spec.name, run_id=args.run_id, results=results, now=now))


def cmd_serve_slot(ctx: Context) -> int:
    """``ctloop serve slot``: one blue-green slot's model server, in the foreground (docs/serving.md)."""
    from ctloop.serving.auth import ensure_token, load_token
    from ctloop.serving.server import run_slot

    args, settings = ctx.args, ctx.settings
    if args.version and args.alias:
        raise ValueError("give --version or --alias, not both")
    # the local stack shares one token file between the slots and the switch; a cluster passes the token in
    token = ensure_token(settings) if settings.runtime == "local" else load_token(settings)
    return run_slot(ctx.spec, settings, slot=args.slot, port=args.port, host=args.host, version=args.version,
                    alias=args.alias, token=token)


def cmd_serve_switch(ctx: Context) -> int:
    """``ctloop serve switch``: the local traffic switch in front of the slots, in the foreground (docs/deploy.md)."""
    from ctloop.deploy.switch import serve

    if ctx.settings.runtime != "local":
        raise ValueError("serve switch: the kubernetes runtime switches with the ctloop-serving Service's selector")
    serve(ctx.settings, port=ctx.args.port, bootstrap_champions=not ctx.args.no_champion)
    return 0


def cmd_serve_status(ctx: Context) -> int:
    """``ctloop serve status``: the live URL, the live slot, each slot's version and state, the token file."""
    from ctloop.deploy.deploy import serving_status

    status = serving_status(ctx.spec, ctx.settings, ctx.lake)
    if ctx.args.json:
        return ctx.emit(status)
    print(f"{status['pipeline']}: {status['url']}  live slot {status['live_slot'] or '-'} "
          f"(v{status['live_version'] or '-'}), champion v{status['champion'] or '-'}; "
          f"token file {status['token_file']}")
    for name, slot in status["slots"].items():
        print(f"  {name:<6} v{slot['version'] or '-':<6} {slot['state']:<9} {slot.get('url') or ''}")
    return 0


def cmd_deploy(ctx: Context) -> int:
    import contextlib

    from ctloop.deploy.deploy import deploy

    spec = ctx.spec
    if ctx.args.watch:  # this deploy's watch window instead of the spec's (recorded with the deploy)
        from ctloop.config.spec import duration_seconds

        try:
            duration_seconds(ctx.args.watch)
        except ValueError:
            raise ValueError(f"--watch: expected a duration like 30s, 5m or 1h, got {ctx.args.watch!r}") from None
        spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"watch": ctx.args.watch})})
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the JSON summary's
        result = deploy(spec, ctx.settings, ctx.lake, ctx.args.version, reason=ctx.args.reason or "")
    return ctx.emit(result)


def cmd_rollback(ctx: Context) -> int:
    import contextlib

    from ctloop.deploy.deploy import rollback

    with contextlib.redirect_stdout(sys.stderr):
        result = rollback(ctx.spec, ctx.settings, ctx.lake, reason=ctx.args.reason)
    return ctx.emit(result)


def cmd_demo(ctx: Context) -> int:
    from ctloop.demo import run_demo

    a = ctx.args
    summary = run_demo(ctx.spec, ctx.settings, events=a.events, seed=a.seed, bad_fraction=a.bad_fraction)
    ctx.emit(summary)
    serving = (summary.get("serving") or {}).get("live_version")
    return 0 if summary["registered"] and not summary["failed_runs"] and serving else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctloop", description=__doc__.splitlines()[0])
    parser.add_argument("--result-file", metavar="PATH",
                        help="also write the JSON summary to PATH (the operator factory passes Airflow's XCom file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help: str, *, pipeline: bool = True) -> argparse.ArgumentParser:
        """A subcommand; most act on one pipeline, named by ``--pipeline``."""
        cmd = sub.add_parser(name, help=help)
        if pipeline:
            cmd.add_argument("--pipeline", required=True, help="pipeline name (pipelines/<name>.yaml) or spec path")
        cmd.set_defaults(func=func)
        return cmd

    stack = command("stack", cmd_stack, "start, inspect or stop the embedded services (local runtime)", pipeline=False)
    stack.add_argument("action", choices=["up", "status", "down"])
    stack.add_argument("--json", action="store_true", help="print the status as JSON")

    prod = command("produce", cmd_produce, "send simulated events (and delayed labels) to Kafka")
    prod.add_argument("--events", type=int, required=True, help="number of primary events to generate")
    prod.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    prod.add_argument("--seed", type=int, default=0, help="same seed, same events (default 0)")
    prod.add_argument("--bad-fraction", type=float, default=0.0,
                      help="share of messages corrupted: malformed JSON, wrong types, missing fields, oversized")
    prod.add_argument("--drift-at", type=int, help="inject drift from this event index on")
    prod.add_argument("--drift-kind", choices=["covariate", "concept"], default="covariate")

    ingest = command("ingest", cmd_ingest, "land the pipeline's topics in the lake as Parquet, exactly once; "
                     "announce what landed", pipeline=False)
    which = ingest.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", help="pipeline name (pipelines/<name>.yaml) or spec path")
    which.add_argument("--all", action="store_true",
                       help="with --follow: every spec in CTLOOP_PIPELINES_DIR, one supervised lander process each")
    how = ingest.add_mutually_exclusive_group(required=True)
    how.add_argument("--until-caught-up", action="store_true",
                     help="stop once the end offsets seen at start are landed")
    how.add_argument("--follow", action="store_true", help="keep landing until SIGTERM/SIGINT")
    how.add_argument("--announce", action="store_true",
                     help="print what landed since the announce cursor, as a landing summary (lands nothing)")
    how.add_argument("--announced", metavar="CURSOR",
                     help="move the announce cursor to CURSOR, the `cursor` of an --announce, once Airflow has it")
    ingest.add_argument("--max-seconds", type=float, help="stop (cleanly) after this long")

    spec = command("spec", cmd_spec, "validate pipeline specs", pipeline=False)
    spec.add_argument("pipelines", nargs="*", help="pipeline names (default: every spec in CTLOOP_PIPELINES_DIR)")

    spark = command("spark", cmd_spark, "Spark jobs: clean (raw → curated) and features (curated → features)")
    spark.add_argument("job", choices=["clean", "features"])
    spark.add_argument("--start", required=True, help="interval start (inclusive), ISO date or datetime, whole hour")
    spark.add_argument("--end", required=True, help="interval end (exclusive)")

    mat = command("materialize", cmd_materialize, "load the interval's feature rows into the Feast online store")
    mat.add_argument("--start", required=True)
    mat.add_argument("--end", required=True)

    tset = command("training-set", cmd_training_set, "build a labelled point-in-time training-set snapshot")
    tset.add_argument("--start", help="first event time (inclusive)")
    tset.add_argument("--end", help="last event time (exclusive)")
    tset.add_argument("--as-of", help="labels known at this time (default: --end)")
    tset.add_argument("--latest", action="store_true",
                      help="the newest window with mature labels: model.training_window long, ending "
                           "labels.maturity_days before the end of the landed data")

    retr = command("retrain", cmd_retrain, "retrain requests and the retrain policy's ledger (docs/airflow.md)")
    retr.add_argument("action", choices=["request", "decide", "finish", "ledger"],
                      help="request: send one to the Kafka topic; decide/finish: the train DAG's policy steps; "
                           "ledger: print every decision")
    retr.add_argument("--reason", default="requested by hand", help="request: why")
    retr.add_argument("--requested-by", default="cli", help="request: who")
    retr.add_argument("--run-id", help="decide/finish: the train DAG run")
    retr.add_argument("--now", help="decide/finish: the run's time (ISO); the policy never reads the clock")
    retr.add_argument("--requests", help="decide: JSON list of requests ({reason, requested_by, requested_at, source})")
    retr.add_argument("--results", help="finish: JSON {quality, evaluation, registered} of the run's jobs")

    train = command("train", cmd_train, "train the pipeline's Keras model on a snapshot and log it to MLflow")
    train.add_argument("--dataset", required=True, help="training-set snapshot id (from `ctloop training-set`)")

    quality = command("quality", cmd_quality, "Great Expectations checks of a training-set snapshot; the landed "
                                              "intervals blocked for training, and their acknowledgement")
    quality.add_argument("action", nargs="?", choices=["check", "blocks", "ack"], default="check",
                         help="check (default): a snapshot's suite; blocks: every blocked interval and whether it "
                              "was acknowledged; ack: release a blocked interval for training")
    quality.add_argument("--dataset", help="check: training-set snapshot id")
    quality.add_argument("--interval", help="ack: the blocked interval: its start (ISO; enough when one block "
                                            "starts there), or START/END")
    quality.add_argument("--end", help="ack: end of the blocked interval, when several start at --interval")
    quality.add_argument("--by", help="ack: who acknowledges (recorded)")
    quality.add_argument("--comment", default="", help="ack: why the data may be trained on (recorded)")
    quality.add_argument("--at", help="ack: when it was acknowledged (ISO; default now)")

    mon = command("monitor", cmd_monitor, "judge a landed interval: drift against the champion's reference, data "
                                          "quality, delayed-label performance (docs/monitoring.md)")
    mon.add_argument("--start", required=True, help="interval start (inclusive), ISO date or datetime, whole hour")
    mon.add_argument("--end", required=True, help="interval end (exclusive)")
    mon.add_argument("--reference", metavar="SNAPSHOT",
                     help="judge drift against this training-set snapshot (default: the champion's own)")

    evaluate = command("evaluate", cmd_evaluate, "score candidate and champion on the same holdout; apply the gate")
    evaluate.add_argument("--run-id", required=True, help="MLflow run id of the candidate (from `ctloop train`)")
    evaluate.add_argument("--extra-slices", help="JSON list of slices ({name, field, equals | min, max}) the gate "
                                                 "also checks: the retrain request's drifted slices")

    register = command("register", cmd_register, "infra-check and register a gated candidate as `challenger`")
    register.add_argument("--run-id", required=True)

    registry = command("registry", cmd_registry, "the registered model's aliases and the record of their moves")
    registry.add_argument("action", choices=["history", "set-alias"])
    registry.add_argument("--alias", help="history: only this alias; set-alias: the alias to move")
    registry.add_argument("--version", help="set-alias: the model version")
    registry.add_argument("--reason", help="set-alias: why (recorded with who and when)")

    serve = command("serve", cmd_serve_slot, "online serving (Open Inference Protocol v2; docs/serving.md)",
                    pipeline=False)
    serve_sub = serve.add_subparsers(dest="serve_action", required=True, metavar="ACTION")
    slot = serve_sub.add_parser("slot", help="run one blue-green slot's model server in the foreground; ready "
                                             "(GET /v2/health/ready) once the model and Feast are loaded")
    slot.set_defaults(func=cmd_serve_slot)
    slot.add_argument("--pipeline", required=True, help="pipeline name (pipelines/<name>.yaml) or spec path")
    slot.add_argument("--slot", choices=["blue", "green"], default=os.environ.get("CTLOOP_SERVING_SLOT"),
                      required="CTLOOP_SERVING_SLOT" not in os.environ,
                      help="which slot this server is (default: $CTLOOP_SERVING_SLOT)")
    slot.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    slot.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a pod)")
    which_model = slot.add_mutually_exclusive_group()
    which_model.add_argument("--version", help="serve this registered model version")
    which_model.add_argument("--alias", help="serve the version this registry alias points at (default: champion)")
    switch = serve_sub.add_parser("switch", help="run the local traffic switch in front of the blue and green slots "
                                                 "(what `ctloop stack up` starts; docs/deploy.md)")
    switch.set_defaults(func=cmd_serve_switch)
    switch.add_argument("--port", type=int, help="port to listen on (default CTLOOP_SERVING_PORT)")
    switch.add_argument("--no-champion", action="store_true",
                        help="on a first start, do not load each pipeline's champion into its blue slot")
    status = serve_sub.add_parser("status", help="the live URL, the live slot, each slot's model version and state")
    status.set_defaults(func=cmd_serve_status)
    status.add_argument("--pipeline", required=True, help="pipeline name (pipelines/<name>.yaml) or spec path")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    dep = command("deploy", cmd_deploy, "blue-green deploy of a registered version: load the idle slot, smoke-test, "
                                        "switch, watch, roll back on a breach, then move `champion` (docs/deploy.md)")
    dep.add_argument("--version", required=True, help="registered model version to deploy")
    dep.add_argument("--reason", help="why (recorded with the deploy)")
    dep.add_argument("--watch", help="watch window of this deploy, like 30s or 5m (default: the spec's "
                                     "deploy.watch; empty: the spec's)")
    back = command("rollback", cmd_rollback, "switch back to the previous version (warm old slot, else the last "
                                             "known good champion) and move `champion` back")
    back.add_argument("--reason", default="rollback requested by hand", help="why (recorded)")

    demo = command("demo", cmd_demo, "run the loop end to end on the embedded stack, through Airflow DAG runs",
                   pipeline=False)
    demo.add_argument("--pipeline", default="fraud")
    demo.add_argument("--events", type=int, default=100_000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--bad-fraction", type=float, default=0.02)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ctloop.ingest.broker import BrokerUnavailable
    from ctloop.stack.service import StackError

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter drowns the progress lines
    try:
        return args.func(Context(args, load_settings()))
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
