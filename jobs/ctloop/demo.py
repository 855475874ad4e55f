"""``ctloop demo``: the loop on the embedded stack, driven through Airflow as a user would.

Produces simulated events, starts the stack, and follows the DAG runs (ingest → features → train)
through Airflow's REST API: DAG runs, not direct function calls. The train run registers the first
model and deploys it blue-green through its deploy step (it becomes ``champion`` once its watch window
held: 10 s in the demo, set for the demo's Airflow as the Variable ``ctloop_deploy_watch``, since a demo
has no users to watch for a minute). The demo ends with it serving: a few predictions of recent
transactions, made through the traffic switch, are printed. The summary names every run with its note
and task seconds, the gate decision, the registry's aliases, the deploy and the serving state.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.orchestration.client import AirflowClient
from ctloop.registry.aliases import client as mlflow_client
from ctloop.registry.aliases import current_version, history
from ctloop.sim.producer import produce
from ctloop.stack.airflow import login
from ctloop.stack.supervisor import Stack

DEMO_WATCH = "10s"  # the deploy's watch window in the demo (the spec's applies everywhere else)


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


def run_demo(spec: PipelineSpec, settings: Settings, *, events: int, seed: int, bad_fraction: float) -> dict[str, Any]:
    """The loop on the embedded stack, driven through Airflow; the summary, also written to the state dir."""
    timings: dict[str, float] = {}
    started = time.monotonic()

    def stage(name: str) -> None:
        timings[name] = round(time.monotonic() - started - sum(timings.values()), 2)
        print(f"[demo] {name} done in {timings[name]}s", file=sys.stderr, flush=True)

    name = spec.name
    since = datetime.now(UTC).isoformat()  # every DAG run queued from here on is this demo's (schedules included)
    print(f"[demo] starting the embedded stack under {settings.state_dir} (first start: ~1 min)",
          file=sys.stderr, flush=True)
    # Airflow reads AIRFLOW_VAR_* as Variables: the train DAG's deploy watches for this long (if this demo starts
    # Airflow; an Airflow already running keeps its own setting, by default the spec's deploy.watch)
    os.environ.setdefault("AIRFLOW_VAR_CTLOOP_DEPLOY_WATCH", DEMO_WATCH)
    # the events go in before Airflow starts: the ingest schedule's first run then lands all of them, and
    # features runs once instead of once per partial landing
    Stack(settings, [g for g in settings.stack_groups if g != "airflow"]).up(timeout_s=300)
    produced = produce(spec, settings, events=events, seed=seed, bad_fraction=bad_fraction)
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
    deployed = _xcom_or_none(client, f"{name}_train", trained[-1]["dag_run_id"], "deploy") if trained else None
    serving = _serving(spec, settings)
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
        "deploy": ({k: deployed.get(k) for k in ("outcome", "reason", "version", "live_slot", "champion", "record",
                                                 "smoke", "watch")} if deployed else None),
        "serving": serving,
        "stage_seconds": timings, "total_seconds": round(time.monotonic() - started, 2),
    }
    summary["failed_runs"] = failed
    summary["registered"] = bool(trained)
    out = settings.state_dir / "demo-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"[demo] summary written to {out}; Airflow {settings.airflow_api_url}, MLflow "
          f"{settings.mlflow_tracking_uri}; stop the stack with `make stack-down`", file=sys.stderr)
    if failed or not trained:
        print(f"[demo] the loop did not reach a registered model: failed runs {failed or 'none'}", file=sys.stderr)
    elif not serving.get("live_version"):
        print(f"[demo] the registered model is not serving: deploy {summary['deploy']}", file=sys.stderr)
    return summary


def _xcom_or_none(client: Any, dag_id: str, run_id: str, task_id: str) -> Any:
    try:
        return client.xcom(dag_id, run_id, task_id)
    except Exception:  # noqa: BLE001 - a task that did not run has no XCom
        return None


def _serving(spec: PipelineSpec, settings: Settings, predictions: int = 5) -> dict[str, Any]:
    """The serving state, and a few predictions of recent transactions made through the traffic switch."""
    from ctloop.deploy.deploy import serving_status
    from ctloop.lake.store import open_lake

    lake = open_lake(settings)
    status = serving_status(spec, settings, lake)
    facts = {k: status[k] for k in ("url", "live_slot", "live_version", "champion", "token_file", "switch")}
    facts["slots"] = {n: {"version": s["version"], "state": s["state"]} for n, s in status["slots"].items()}
    if not status["live_version"]:
        return {**facts, "predictions": []}
    try:
        facts["predictions"] = _predict_recent(spec, settings, lake, status["url"], predictions)
    except Exception as exc:  # noqa: BLE001 - the summary says what went wrong, the demo still reports
        facts["predictions"] = []
        facts["prediction_error"] = f"{type(exc).__name__}: {exc}"
    for p in facts["predictions"]:
        print(f"[demo] prediction through the switch ({status['url']}): {p['id']} score {p['score']:.4f} "
              f"decision {p['decision']} (slot {p['slot']}, model v{p['version']}, {p['ms']} ms)",
              file=sys.stderr, flush=True)
    return facts


def _predict_recent(spec: PipelineSpec, settings: Settings, lake: Any, url: str, n: int) -> list[dict[str, Any]]:
    """Score the ``n`` latest landed transactions through the switch, as a client would: id, entity keys and
    request fields in the request; the server looks the features up in Feast."""
    import httpx

    from ctloop.lake.paths import curated_prefix
    from ctloop.serving.auth import load_token
    from ctloop.serving.protocol import entity_keys

    primary = spec.events[spec.primary]
    data = lake.dataset(curated_prefix(spec.name, spec.primary))
    names = list(dict.fromkeys([primary.id_field, *entity_keys(spec), *spec.model.request_fields]))
    rows = data.to_table(columns=[*names, primary.time_field]).to_pandas() if data is not None else None
    if rows is None or rows.empty:
        return []
    rows = rows.sort_values(primary.time_field).tail(n)
    kinds = {"string": "BYTES", "int": "INT64", "double": "FP64", "bool": "BOOL"}
    out = []
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {load_token(settings)}"}) as http:
        for row in rows.to_dict("records"):
            inputs = []
            for name in names:
                kind, value = primary.fields[name].type, row[name]
                value = None if value is None or value != value else (
                    str(value) if kind == "string" else bool(value) if kind == "bool" else
                    int(value) if kind == "int" else float(value))
                inputs.append({"name": name, "datatype": kinds[kind], "shape": [1], "data": [value]})
            started = time.perf_counter()
            answer = http.post(f"{url}/infer", json={"id": str(row[primary.id_field]), "inputs": inputs})
            answer.raise_for_status()
            body = answer.json()
            outputs = {o["name"]: o["data"][0] for o in body["outputs"]}
            out.append({"id": body["id"], "score": outputs["score"], "decision": outputs["decision"],
                        "slot": answer.headers.get("x-ctloop-slot"), "version": body["model_version"],
                        "ms": round((time.perf_counter() - started) * 1000, 1)})
    return out
