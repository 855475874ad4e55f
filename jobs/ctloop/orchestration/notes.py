"""The lines of a DAG run's note, and the small pure functions the DAGs' Airflow-side tasks call.

Tested without Airflow; light imports only.

Everything heavy runs as ``ctloop`` job commands; these only read the commands' JSON results and
asset events and turn them into intervals, gate verdicts and the lines of a run's note.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

DECISION_KEY = "ctloop_decision"  # XCom key of a task's decision lines; the run-note listener joins them


def landed_interval(summary: dict[str, Any] | None) -> list[str] | None:
    """The event-time interval a lander run landed, or None when it landed nothing."""
    if not summary or not summary.get("landed") or not summary.get("interval"):
        return None
    return list(summary["interval"])


def landed_line(summary: dict[str, Any]) -> str:
    """The ingest run's decision for its note: what landed, and whether the raw asset event goes out."""
    dead = f"{summary.get('dead_letters', 0):,} to the dead-letter topic"
    interval = landed_interval(summary)
    if interval is None:
        return f"nothing new landed ({dead}): no raw asset event"
    return (f"landed {summary['landed']:,} events ({dead}) in {summary.get('files', 0):,} files, event time "
            f"{interval[0]} to {interval[1]}: raw asset event emitted")


def features_line(span: list[str], materialized_rows: int) -> str:
    """The features run's decision for its note."""
    return (f"features recomputed for {span[0]} to {span[1]}, {materialized_rows:,} rows materialized to the "
            "online store: features asset event emitted")


def union_interval(intervals: list[list[str] | None]) -> list[str]:
    """The interval covering every triggering event's ``[start, end)`` (events may arrive merged)."""
    spans = [(datetime.fromisoformat(i[0]), datetime.fromisoformat(i[1])) for i in intervals if i]
    if not spans:
        raise ValueError("no interval: trigger this DAG from its asset, or with conf {\"start\": ..., \"end\": ...}")
    return [min(s for s, _ in spans).isoformat(), max(e for _, e in spans).isoformat()]


def quality_verdict(result: dict[str, Any] | None) -> tuple[bool, str]:
    if not result:
        return False, "data quality: no result"
    if result.get("passed"):
        return True, "data quality passed"
    return False, "data quality refused: " + "; ".join(result.get("reasons") or ["no reason given"])


def gate_verdict(result: dict[str, Any] | None, primary: str = "pr_auc") -> tuple[bool, str]:
    if not result:
        return False, "evaluation gate: no result"
    # `ctloop evaluate` reports each model's metrics under "overall" (next to "slices")
    cand = ((result.get("candidate") or {}).get("overall") or {}).get(primary)
    champ = ((result.get("champion") or {}).get("overall") or {}).get(primary)
    versus = f"{primary} {_num(cand)} vs champion {_num(champ)}" if champ is not None else \
        f"{primary} {_num(cand)}, no champion yet"
    if result.get("passed"):
        return True, f"evaluation gate passed: {versus}"
    return False, f"evaluation gate refused ({versus}): " + "; ".join(result.get("reasons") or ["no reason given"])


def registered_line(result: dict[str, Any] | None) -> str:
    if not result:
        return "registration: no result"
    return f"registered {result.get('model')} version {result.get('version')} as {result.get('alias', 'challenger')}"


def deploy_line(result: dict[str, Any] | None) -> str:
    """The deploy step's decision for the train run's note: what was switched, or why not.

    ``result`` is ``ctloop deploy``'s summary: ``outcome`` (promoted, refused, rolled_back, breached,
    unchanged), ``reason``, ``version``, ``live_slot``, ``champion`` and, when promoted, ``previous``."""
    if not result:
        return "deploy: no result"
    version, outcome, reason = result.get("version"), result.get("outcome"), result.get("reason", "")
    if outcome == "promoted":
        previous = result.get("previous") or {}
        was = (f"{previous.get('slot')} v{previous.get('version')}" if previous.get("version")
               else "nothing live before")
        return (f"deployed v{version}: traffic switched to {result.get('live_slot')} (from {was}); "
                f"champion after the watch: {reason.removeprefix('held its watch window: ')}")
    if outcome == "refused":
        return f"deploy of v{version} refused, nothing switched, champion stays v{result.get('champion')}: {reason}"
    if outcome == "rolled_back":
        return (f"deploy of v{version} rolled back to {result.get('live_slot')}, champion stays "
                f"v{result.get('champion')}: {reason.removeprefix('rollback: ')}")
    if outcome == "breached":
        return f"deploy of v{version} breached its watch with nothing to roll back to: {reason}"
    return f"deploy of v{version}: {reason or outcome}"


def reasons_from_checks(result: dict[str, Any] | None) -> list[str]:
    """Failed monitoring checks as retrain reasons.

    The monitoring result: ``{"checks": [{"name": str, "passed": bool, "detail": str, "evidence": {...}}, ...]}``
    (what ``ctloop monitor`` prints, or the monitor DAG's run conf). A check whose evidence names an
    ``action`` other than ``retrain`` is reported but requests nothing.
    """
    checks = (result or {}).get("checks") or []
    if not isinstance(checks, list):
        raise ValueError("checks: expected a list of {name, passed, detail}")
    for i, check in enumerate(checks):
        if not isinstance(check, dict) or not isinstance(check.get("name"), str):
            raise ValueError(f"checks[{i}]: expected an object with a string name, got {check!r:.200}")
        if not isinstance(check.get("evidence") or {}, dict):
            raise ValueError(f"checks[{i}].evidence: expected an object, got {check['evidence']!r:.200}")
    return [f"{c.get('name', '?')}: {c.get('detail') or 'failed'}" for c in checks
            if not c.get("passed", False) and asks_retrain(c)]


def asks_retrain(check: dict[str, Any]) -> bool:
    """A failed check requests a retrain unless its evidence says otherwise: a quality check under
    ``monitoring.quality.action`` ``alert`` (reported only) or ``block`` (training waits for a person)."""
    return (check.get("evidence") or {}).get("action", "retrain") == "retrain"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "?"


def training_set_verdict(result: dict[str, Any] | None) -> tuple[bool, str | None]:
    """Whether ``ctloop training-set`` built a snapshot; when it refused (landed data blocked by a failed
    quality suite and not acknowledged), the note's line saying why and how to release it."""
    if result and result.get("refused"):
        return False, result.get("reason") or "training set refused: no reason given"
    return True, None


def quality_block(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The block a monitor run's quality checks raised (``monitoring.quality.action: block``), as the approval
    task shows it: the interval, its failed streams, the Data Docs, a subject and a Markdown body; None if none."""
    blocked = [c for c in (result or {}).get("checks") or []
               if not c.get("passed", False) and (c.get("evidence") or {}).get("blocked")]
    if not blocked:
        return None
    evidence = blocked[0]["evidence"]
    start, end = evidence["interval"]
    lines = [f"- **{c['name']}**: {c.get('detail') or 'failed'}" for c in blocked]
    docs = evidence.get("data_docs")
    body = "\n".join([f"Landed data of `{start}` to `{end}` failed its data-quality suite, so training on it is "
                      "blocked.", "", *lines, "",
                      *([f"Data Docs: {docs}", ""] if docs else []),
                      "**Approve** to acknowledge it: the interval may be trained on again, and your name, the time "
                      "and your comment are recorded. **Reject** keeps it blocked (`ctloop quality ack` can still "
                      "release it later)."])
    return {"interval": start, "end": end, "streams": [c["name"] for c in blocked], "data_docs": docs,
            "record": evidence["blocked"], "subject": f"Training blocked: landed data of {start} failed its "
                                                      "quality suite", "body": body}


def acknowledged_line(result: dict[str, Any] | None) -> str:
    """The monitor run's line once a person acknowledged a blocked interval (``ctloop quality ack``'s result)."""
    if not result:
        return "acknowledgement: no result"
    comment = f": {result['comment']}" if result.get("comment") else ""
    again = " (already acknowledged before)" if result.get("already") else ""
    return (f"blocked interval {result.get('start')} to {result.get('end')} acknowledged by {result.get('by')} at "
            f"{result.get('acknowledged_at')}{again}{comment}; training may use it")
