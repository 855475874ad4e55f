"""The retrain ledger: every decision and finish of a pipeline's retrain policy, in the lake.

Why the lake and not Airflow's metadata DB: it works the same on ``file://`` and ``s3://``, survives
an Airflow reinstall or DB reset, and the monitoring jobs and people can read it next to the data it
is about. Nothing in it is rewritten but a hint, so two writers cannot lose each other's records.

Under ``_state/retrain/<pipeline>/`` (``ctloop.lake.paths``):

* ``<time>-decision-<key>.json`` and ``<time>-finished-<key>.json``: the audit log, one JSON object
  per decision or finish, which ``ctloop retrain ledger`` lists;
* ``accepted/00000001.json``, ``00000002.json``, …: the accepted runs, a numbered chain. A decider
  that accepts takes the next number with a create-if-absent write (``Lake.create``), so of two
  deciders racing (a retried task, a CLI ``ctloop retrain decide``, a second scheduler: Airflow's
  ``max_active_runs=1`` is no lock) exactly one accepts; the other reads again and decides again,
  now merging into the winner's run or refused by it. ``accepted/head.json`` is a hint, the last
  number known taken: readers probe forward from it, so a stale hint costs a read, never a wrong answer;
* ``runs/<run_id>.json``: a run's decisions, created once, which a retried task replays by its key;
* ``finished/<run_id>.json``: how an accepted run ended, created once.

A decision reads a few small objects (its run's key, the hint, the chain's head and that run's finish
marker) however long the history: the rules need only the last accepted run
(``ctloop.retrain.policy.LastAccepted``), and each chain entry carries it. A ledger written before the
chain existed is indexed once, on first use.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from ctloop.lake.hours import parse_time
from ctloop.lake.paths import ledger_accepted, ledger_finished, ledger_head, ledger_prefix, ledger_record, ledger_run
from ctloop.lake.store import Lake
from ctloop.retrain.policy import (
    LastAccepted,
    Policy,
    RetrainRequest,
    accepted_after,
    accepted_at,
    decide_run,
    outcome,
    signals,
    summary,
)

ATTEMPTS = 20  # numbers lost in a row before giving up; each loss is another run accepted, so this is ample


def _dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=1).encode()


def _key(run_id: str, item: int | str) -> str:
    """A stable name part for a run's n-th audit record: rewriting it (a replay) never adds one."""
    return hashlib.sha256(f"{run_id}\n{item}".encode()).hexdigest()[:8]


class Ledger:
    """Every decision and finish of one pipeline, and the compacted state the policy decides on."""

    def __init__(self, lake: Lake, pipeline: str) -> None:
        self.lake = lake
        self.pipeline = pipeline
        self.prefix = ledger_prefix(pipeline)

    def records(self) -> list[dict[str, Any]]:
        """The audit view: every decision and finish in time order (reads all of them; deciding never does)."""
        start = len(self.prefix) + 1
        return [json.loads(self.lake.read(p)) for p in self.lake.list(self.prefix)
                if p.endswith(".json") and "/" not in p[start:]]

    def append(self, record: dict[str, Any], at: datetime) -> str:
        """Record one decision or finish and index it: how history is seeded or imported.

        ``record_decisions`` and ``record_finish`` are the policy's own writers.
        """
        self._hint()
        path = ledger_record(self.pipeline, parse_time(at), record["kind"], uuid.uuid4().hex[:8])
        self.lake.write(path, _dump(record))
        self._index(record)
        return path

    # -- the compacted state ------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any] | None:
        return json.loads(self.lake.read(path)) if self.lake.exists(path) else None

    def _hint(self) -> int:
        hint = self._get(ledger_head(self.pipeline))
        if hint is not None:
            return int(hint["seq"])
        self._import(self.records())  # first use (or a lost hint): index what is there, idempotently
        seq = self._probe(0)
        self.lake.write(ledger_head(self.pipeline), _dump({"seq": seq}))
        return seq

    def _probe(self, seq: int) -> int:
        while self.lake.exists(ledger_accepted(self.pipeline, seq + 1)):
            seq += 1
        return seq

    def head(self) -> dict[str, Any] | None:
        """The chain entry of the last accepted run: ``{seq, run_id, at, day_count, decisions, ...}``."""
        seq = self._probe(self._hint())
        return json.loads(self.lake.read(ledger_accepted(self.pipeline, seq))) if seq else None

    def last_accepted(self, head: dict[str, Any] | None) -> LastAccepted | None:
        if head is None:
            return None
        return LastAccepted.from_dict(head, finished=self.lake.exists(ledger_finished(self.pipeline, head["run_id"])))

    def take(self, last: LastAccepted | None, head: dict[str, Any] | None, accepted: LastAccepted,
             decisions: list[dict[str, Any]], decided_at: datetime) -> bool:
        """Take the number after ``head`` for ``accepted``; False when another decider took it first."""
        seq = head["seq"] + 1 if head else 1
        entry = {"kind": "accepted", "seq": seq, "pipeline": self.pipeline, **accepted.to_dict(),
                 "previous": last.run_id if last else None, "decided_at": parse_time(decided_at).isoformat(),
                 "decisions": decisions}
        if not self.lake.create(ledger_accepted(self.pipeline, seq), _dump(entry)):
            return False
        self.lake.write(ledger_head(self.pipeline), _dump({"seq": seq}))  # a hint: racing writers may leave it behind
        return True

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A run's recorded decisions ``{run_id, note, decisions}``, None when it has not been decided."""
        return self._get(ledger_run(self.pipeline, run_id))

    def save_run(self, run_id: str, decisions: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Record a run's decisions once; when a decider of the same run got there first, its record wins."""
        record = {"run_id": run_id, "note": summary(decisions), "decisions": decisions}
        if self.lake.create(ledger_run(self.pipeline, run_id), _dump(record)):
            return record, True
        return json.loads(self.lake.read(ledger_run(self.pipeline, run_id))), False

    def audit(self, run_id: str, decisions: list[dict[str, Any]]) -> None:
        """Write a run's decisions to the audit log under stable names (a replay rewrites the same objects)."""
        for i, d in enumerate(decisions):
            self.lake.write(ledger_record(self.pipeline, parse_time(d["decided_at"]), "decision", _key(run_id, i)),
                            _dump(d))

    def finish(self, record: dict[str, Any], at: datetime) -> bool:
        """Mark a run finished (once) and log it; False when it was marked already (then its log is repaired)."""
        run_id = record["run_id"]
        created = self.lake.create(ledger_finished(self.pipeline, run_id), _dump(record))
        if not created:  # log what the first finish marked, in case it stopped before logging
            record = json.loads(self.lake.read(ledger_finished(self.pipeline, run_id)))
            if not record.get("run_after"):
                return False  # appended by hand (``append``), which logged it
            at = parse_time(record["run_after"])
        self.lake.write(ledger_record(self.pipeline, parse_time(at), "finished", _key(run_id, "finished")),
                        _dump(record))
        return created

    def _index(self, record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        if record.get("kind") == "finished":
            self.lake.create(ledger_finished(self.pipeline, run_id), _dump(record))
            return
        earlier = (self.run(run_id) or {}).get("decisions", [])
        decisions = [*earlier, record]
        self.lake.write(ledger_run(self.pipeline, run_id),
                        _dump({"run_id": run_id, "note": summary(decisions), "decisions": decisions}))
        if record.get("outcome") != "accepted":
            return
        for _ in range(ATTEMPTS):
            head = self.head()
            last = self.last_accepted(head)
            accepted = accepted_after(last, run_id, accepted_at(record))
            if self.take(last, head, accepted, [record], parse_time(record.get("decided_at") or accepted.at)):
                return
        raise RuntimeError(f"retrain ledger {self.pipeline}: could not index the acceptance of run {run_id}")

    def _import(self, records: list[dict[str, Any]]) -> None:
        """Index audit records the chain does not hold (a ledger from before it): the same numbers and
        objects whoever runs it, so importers racing agree, and a second run changes nothing."""
        decisions = [r for r in records if r.get("kind") == "decision"]
        runs: dict[str, list[dict[str, Any]]] = {}
        for record in decisions:
            runs.setdefault(record["run_id"], []).append(record)
        for run_id, made in runs.items():
            self.lake.create(ledger_run(self.pipeline, run_id),
                             _dump({"run_id": run_id, "note": summary(made), "decisions": made}))
        for record in records:
            if record.get("kind") == "finished":
                self.lake.create(ledger_finished(self.pipeline, record["run_id"]), _dump(record))
        accepted = sorted((r for r in decisions if r.get("outcome") == "accepted"),
                          key=accepted_at)
        last: LastAccepted | None = None
        for seq, record in enumerate(accepted, start=1):
            now = accepted_after(last, record["run_id"], accepted_at(record))
            entry = {"kind": "accepted", "seq": seq, "pipeline": self.pipeline, **now.to_dict(),
                     "previous": last.run_id if last else None, "decided_at": record.get("decided_at"),
                     "decisions": [record]}
            self.lake.create(ledger_accepted(self.pipeline, seq), _dump(entry))
            last = now


def _result(run_id: str, record: dict[str, Any], *, replayed: bool) -> dict[str, Any]:
    decisions = record["decisions"]
    return {"run_id": run_id, "accepted": any(d["outcome"] == "accepted" for d in decisions),
            "note": record.get("note") or summary(decisions), "decisions": decisions, "replayed": replayed}


def record_decisions(ledger: Ledger, policy: Policy, requests: list[RetrainRequest], *, run_id: str,
                     now: datetime) -> dict[str, Any]:
    """Decide a run's requests and record every decision; the JSON the train DAG branches on.

    An acceptance counts once it holds the next number of the accepted chain; losing it to another
    decider means deciding again on what that decider recorded.
    """
    now = parse_time(now)
    done = ledger.run(run_id)
    if done is not None:  # a retried task: this run's decisions are made; repair the log, return them
        ledger.audit(run_id, done["decisions"])
        return _result(run_id, done, replayed=True)
    if not requests:
        raise ValueError("no retrain request to decide on")
    adopted = False
    for _ in range(ATTEMPTS):
        head = ledger.head()
        if head is not None and head["run_id"] == run_id:
            # an earlier try of this run took the number, then stopped before recording the run
            decisions, adopted = head["decisions"], True
            break
        last = ledger.last_accepted(head)
        made = decide_run(policy, last, requests, run_id=run_id, now=now)
        decisions = [d.to_dict() for d in made]
        accepted = next((d for d in made if d.accepted), None)
        if accepted is None or ledger.take(last, head, accepted_after(last, run_id, accepted.request.requested_at),
                                           decisions, now):
            break
    else:
        raise RuntimeError(f"retrain decide {run_id}: lost the next accepted number {ATTEMPTS} times in a row")
    record, first = ledger.save_run(run_id, decisions)
    ledger.audit(run_id, record["decisions"])
    return _result(run_id, record, replayed=adopted or not first)


def record_finish(ledger: Ledger, *, pipeline: str, run_id: str, results: dict[str, Any],
                  now: datetime) -> dict[str, Any]:
    """Close an accepted run in the ledger (no-op for a run that was refused or already closed).

    The record links the signals that caused the run (``signals``: who asked, which checks failed) to the
    model version it registered (``model``, ``model_version``; None when it registered none).
    """
    run = ledger.run(run_id)
    if run is not None:
        decisions = run["decisions"]
        accepted = any(d["outcome"] == "accepted" for d in decisions)
    else:  # decided, but stopped before its run record: the chain's head may still be it
        head = ledger.head()
        accepted = head is not None and head["run_id"] == run_id
        decisions = head["decisions"] if accepted else []
    if not accepted:
        return {"run_id": run_id, "recorded": False, "why": "run was not accepted"}
    registered = results.get("registered") or {}
    record = {"kind": "finished", "pipeline": pipeline, "run_id": run_id, "outcome": outcome(results),
              "run_after": parse_time(now).isoformat(), "signals": signals(decisions, run_id),
              "model": registered.get("model"),
              "model_version": str(registered["version"]) if registered.get("version") is not None else None}
    if not ledger.finish(record, now):
        return {"run_id": run_id, "recorded": False, "why": "closed already"}
    return {**record, "recorded": True}
