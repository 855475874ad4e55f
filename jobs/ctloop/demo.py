"""``ctloop demo``: the loop on the embedded stack, driven through Airflow as a user would.

Produces simulated events, starts the stack, and follows the DAG runs (ingest → features → train)
through Airflow's REST API: DAG runs, not direct function calls. The summary names every run with
its note and task seconds, the gate decision and the registry's aliases.
"""

from __future__ import annotations

import json
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
    summary["failed_runs"] = failed
    summary["registered"] = bool(trained)
    out = settings.state_dir / "demo-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"[demo] summary written to {out}; Airflow {settings.airflow_api_url}, MLflow "
          f"{settings.mlflow_tracking_uri}; stop the stack with `make stack-down`", file=sys.stderr)
    if failed or not trained:
        print(f"[demo] the loop did not reach a registered model: failed runs {failed or 'none'}", file=sys.stderr)
    return summary
