"""The retrain ledger: every decision and finish of a pipeline's retrain policy, in the lake.

It lives under ``_state/retrain/<pipeline>/`` (``ctloop.lake.paths``), one immutable JSON object per
decision or finish. Why the lake and not Airflow's metadata DB: it works the same on ``file://``
and ``s3://``, survives an Airflow reinstall or DB reset, needs no read-modify-write (nothing is
appended to, so two writers cannot lose each other's records), and the monitoring jobs and people
can read it next to the data it is about. Airflow runs the train DAG with ``max_active_runs=1``,
so decisions of one pipeline are serialized.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from ctloop.lake.hours import parse_time
from ctloop.lake.paths import ledger_prefix
from ctloop.lake.store import Lake
from ctloop.retrain.policy import Policy, RetrainRequest, decide_run, outcome, summary


class Ledger:
    """Every decision and finish of one pipeline, one immutable JSON object each, under the lake's _state/."""

    def __init__(self, lake: Lake, pipeline: str) -> None:
        self.lake = lake
        self.prefix = ledger_prefix(pipeline)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(self.lake.read(p)) for p in self.lake.list(self.prefix) if p.endswith(".json")]

    def append(self, record: dict[str, Any], at: datetime) -> str:
        path = f"{self.prefix}/{parse_time(at):%Y%m%dT%H%M%S}-{record['kind']}-{uuid.uuid4().hex[:8]}.json"
        self.lake.write(path, json.dumps(record, indent=1).encode())
        return path


def record_decisions(ledger: Ledger, policy: Policy, requests: list[RetrainRequest], *, run_id: str,
                     now: datetime) -> dict[str, Any]:
    """Decide a run's requests and record every decision; the JSON the train DAG branches on."""
    history = ledger.records()
    if any(r.get("kind") == "decision" and r["run_id"] == run_id for r in history):
        # a retried task: the decisions of this run are already made and recorded
        decisions = [r for r in history if r.get("kind") == "decision" and r["run_id"] == run_id]
        accepted = any(r["outcome"] == "accepted" for r in decisions)
        note = next((f"retrain accepted — {r['why']}" for r in decisions if r["outcome"] == "accepted"),
                    "retrain not started — " + "; ".join(r["why"] for r in decisions))
        return {"run_id": run_id, "accepted": accepted, "note": note, "decisions": decisions, "replayed": True}
    if not requests:
        raise ValueError("no retrain request to decide on")
    decisions = decide_run(policy, history, requests, run_id=run_id, now=now)
    for d in decisions:
        ledger.append(d.to_dict(), now)
    return {"run_id": run_id, "accepted": any(d.accepted for d in decisions), "note": summary(decisions),
            "decisions": [d.to_dict() for d in decisions], "replayed": False}


def record_finish(ledger: Ledger, *, pipeline: str, run_id: str, results: dict[str, Any],
                  now: datetime) -> dict[str, Any]:
    """Close an accepted run in the ledger (no-op for a run that was refused or already closed)."""
    history = ledger.records()
    accepted = any(r.get("kind") == "decision" and r["run_id"] == run_id and r["outcome"] == "accepted"
                   for r in history)
    closed = any(r.get("kind") == "finished" and r["run_id"] == run_id for r in history)
    if not accepted or closed:
        return {"run_id": run_id, "recorded": False, "why": "closed already" if closed else "run was not accepted"}
    record = {"kind": "finished", "pipeline": pipeline, "run_id": run_id, "outcome": outcome(results),
              "run_after": parse_time(now).isoformat()}
    ledger.append(record, now)
    return {**record, "recorded": True}
