"""Data quality of landed intervals (docs/monitoring.md, "Data quality"): a real lake in the lander's layout,
real Great Expectations, the real ``ctloop`` commands.

Clean hours pass and build the volume norm; an hour with bad events written into the landed data fails,
naming each expectation and column, blocks training under ``action: block`` (``ctloop training-set``
refuses the range and says why) until ``ctloop quality ack`` releases it; blocks are per interval (start
and end), and only a block on a stream training reads refuses it; ``alert`` and ``retrain`` report without
blocking. The monitor DAG's approval path is tested through Airflow in
tests/dags/test_quality_approval.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from ctloop.config.spec import PipelineSpec
from ctloop.lake.paths import hour_partition, quality_block_path, quality_blocks_prefix, raw_prefix
from ctloop.lake.store import Lake
from ctloop.monitoring.blocks import acknowledge, block, unacknowledged
from ctloop.monitoring.checks import Check
from ctloop.monitoring.quality import checks
from ctloop.orchestration.notes import reasons_from_checks
from ctloop.training.training_set import build_training_set

from tests.conftest import settings_env
from tests.quality_helpers import BAD_HOUR, START, landed_lake, write_bad_events

CTLOOP = Path(sys.executable).parent / "ctloop"
H = timedelta(hours=1)


def _judge(spec: PipelineSpec, settings: Any, lake: Lake, start: datetime, end: datetime) -> dict[str, Check]:
    return {c.name: c for c in checks(spec, settings, lake, start, end)}


def _failed(check: Check) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in check.evidence["failed"]}


def _ctloop(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CTLOOP), *args], env=settings_env(settings), capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def judged(tmp_path: Path) -> tuple[PipelineSpec, Lake, Any, dict[str, Check]]:
    """Four clean hours judged (they make the volume norm), then the bad hour."""
    spec, lake, settings = landed_lake(tmp_path)
    for h in range(4):
        clean = _judge(spec, settings, lake, START + h * H, START + (h + 1) * H)
        assert all(c.passed for c in clean.values()), [c.detail for c in clean.values()]
    write_bad_events(spec, lake)
    return spec, lake, settings, _judge(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)


def test_clean_interval_passes_with_its_evidence_and_data_docs(tmp_path: Path) -> None:
    spec, lake, settings = landed_lake(tmp_path)
    first = _judge(spec, settings, lake, START, START + H)
    assert set(first) == {f"quality_{s}" for s in spec.events}  # every landed stream, labels included
    txn = first["quality_transactions"]
    assert txn.passed and txn.evidence["rows"] > 20 and txn.evidence["failed"] == []
    assert txn.evidence["volume"]["history"] == 0 and "volume not judged" in txn.detail  # no history: says so
    index = Path(txn.evidence["data_docs"].removeprefix("file://"))
    assert index.is_file() and index.is_relative_to(Path(lake.uri.removeprefix("file://")))
    assert "fraud_transactions_landed" in index.read_text()
    page = "".join(p.read_text() for p in index.parent.glob("validations/fraud_transactions_landed/**/*.html"))
    for words in ("Succeeded", "values must belong to this set", "values must be unique",
                  "transactions_20260101T00-20260101T01"):
        assert words in page, words
    second = _judge(spec, settings, lake, START + H, START + 2 * H)["quality_transactions"]
    assert second.passed and second.evidence["volume"]["history"] == 1
    assert not lake.list(f"{quality_blocks_prefix('fraud')}/"), "nothing failed: nothing blocked"


def test_broken_interval_fails_naming_expectation_and_column(judged: Any) -> None:
    spec, lake, _, result = judged
    txn = result["quality_transactions"]
    assert not txn.passed
    assert {("expect_column_values_to_be_between", "amount"), ("expect_column_values_to_not_be_null", "transaction_id"),
            ("expect_column_values_to_be_in_set", "currency"),
            ("expect_column_values_to_be_unique", "transaction_id")} <= _failed(txn)
    for words in ("column=amount", "column=currency", "'XXX'", "column=transaction_id", "action block"):
        assert words in txn.detail, (words, txn.detail)
    assert txn.evidence["action"] == "block" and txn.evidence["blocked"].endswith(".json")
    assert result["quality_chargebacks"].passed
    record = json.loads(lake.read(quality_block_path("fraud", BAD_HOUR, BAD_HOUR + H)))
    assert record["start"] == BAD_HOUR.isoformat() and list(record["streams"]) == ["transactions"]
    assert record["data_docs"] == txn.evidence["data_docs"]
    assert reasons_from_checks({"checks": [c.to_json() for c in result.values()]}) == [], "a block asks no retrain"


def test_block_refuses_training_until_acknowledged(judged: Any) -> None:
    spec, lake, settings, _ = judged
    window = ["--pipeline", "fraud", "--start", START.isoformat(), "--end", (START + 6 * H).isoformat()]
    refused = _ctloop(settings, "training-set", *window)
    assert refused.returncode == 0, refused.stderr
    summary = json.loads(refused.stdout)
    assert summary["refused"] is True and "snapshot_id" not in summary
    for words in (f"interval {BAD_HOUR.isoformat()}", "expect_column_values_to_be_in_set(column=currency",
                  "not acknowledged", "ctloop quality ack", "Data Docs"):
        assert words in summary["reason"], (words, summary["reason"])
    elsewhere = _ctloop(settings, "training-set", "--pipeline", "fraud", "--start", (START + 5 * H).isoformat(),
                        "--end", (START + 6 * H).isoformat())
    assert "refused" not in elsewhere.stdout, "a range that does not overlap the block is not refused"

    wrong = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", START.isoformat(), "--by", "x")
    assert wrong.returncode == 2 and f"no blocked interval of fraud starting at {START.isoformat()}" in wrong.stderr
    assert BAD_HOUR.isoformat() in wrong.stderr, "names the intervals that are blocked"
    ack = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", BAD_HOUR.isoformat(),
                  "--by", "alice", "--comment", "test events from the load test, harmless")
    assert ack.returncode == 0, ack.stderr
    record = json.loads(ack.stdout)
    assert (record["by"], record["already"], record["comment"]) == ("alice", False, "test events from the load "
                                                                                   "test, harmless")
    again = json.loads(_ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", BAD_HOUR.isoformat(),
                               "--by", "bob").stdout)
    assert again["already"] is True and again["by"] == "alice", "the first acknowledgement stands"
    listed = json.loads(_ctloop(settings, "quality", "blocks", "--pipeline", "fraud").stdout)
    assert [b["acknowledged"]["by"] for b in listed] == ["alice"]

    proceeds = _ctloop(settings, "training-set", *window)
    # past the refusal, the step goes on to build: here it stops at its next precondition (nothing cleaned yet)
    assert proceeds.returncode == 2 and "no curated transactions events" in proceeds.stderr, proceeds.stderr
    judged_again = _judge(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)["quality_transactions"]
    assert not judged_again.passed and _ctloop(settings, "training-set", *window).returncode == 2, \
        "judging the interval again does not block it again once acknowledged"


def test_a_longer_run_from_a_blocked_hour_blocks_what_failed_after_it(judged: Any) -> None:
    """[04:00, 05:00) is blocked and acknowledged; a run over [04:00, 08:00) finds new failures at 06:00: it is
    a block of its own (with its own Data Docs), and acknowledging it by start alone is ambiguous."""
    spec, lake, settings, first = judged
    acknowledge(lake, "fraud", BAD_HOUR, "alice", "hour 4 was the load test", BAD_HOUR + 2 * H)
    write_bad_events(spec, lake, hour=BAD_HOUR + 2 * H)
    longer = _judge(spec, settings, lake, BAD_HOUR, BAD_HOUR + 4 * H)["quality_transactions"]
    assert not longer.passed and longer.evidence["blocked"].endswith(
        quality_block_path("fraud", BAD_HOUR, BAD_HOUR + 4 * H))
    assert longer.evidence["data_docs"] != first["quality_transactions"].evidence["data_docs"]
    interval = (BAD_HOUR.isoformat(), (BAD_HOUR + 4 * H).isoformat())
    assert [(b["start"], b["end"]) for b in unacknowledged(lake, "fraud", START, START + 12 * H)] == [interval]

    ambiguous = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", BAD_HOUR.isoformat(),
                        "--by", "bob")
    assert ambiguous.returncode == 2 and "2 blocked intervals of fraud start at" in ambiguous.stderr
    assert f"{interval[0]} to {interval[1]}" in ambiguous.stderr and "--end" in ambiguous.stderr, ambiguous.stderr
    wrong_end = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", BAD_HOUR.isoformat(),
                        "--end", (BAD_HOUR + 3 * H).isoformat(), "--by", "bob")
    assert wrong_end.returncode == 2 and f"{interval[0]} to {interval[1]}" in wrong_end.stderr, wrong_end.stderr
    ack = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", "/".join(interval), "--by", "bob")
    assert ack.returncode == 0, ack.stderr
    assert (json.loads(ack.stdout)["start"], json.loads(ack.stdout)["end"]) == interval
    again = _ctloop(settings, "quality", "ack", "--pipeline", "fraud", "--interval", interval[0], "--end",
                    interval[1], "--by", "carol")
    assert json.loads(again.stdout)["already"] is True and json.loads(again.stdout)["by"] == "bob"
    assert unacknowledged(lake, "fraud", START, START + 12 * H) == []


def test_only_blocks_on_streams_training_reads_refuse_it(tmp_path: Path) -> None:
    """Blocks recorded as the monitor records them; training reads transactions (events and feature views) up
    to its end and chargebacks (labels) up to its as-of time, never the prediction log."""
    spec, lake, settings = landed_lake(tmp_path)
    end, as_of = START + 6 * H, START + 12 * H
    failed = ["expect_column_values_to_be_between(column=score, max_value=1.0)"]
    block(lake, "fraud", START + 2 * H, START + 3 * H, {"predictions": failed}, None, end)
    block(lake, "fraud", START + 8 * H, START + 9 * H, {"transactions": failed}, None, end)  # after end
    with pytest.raises(ValueError, match="no curated transactions events"):  # not refused: it goes on to build
        build_training_set(spec, settings, lake, START, end, as_of)

    block(lake, "fraud", START + 3 * H, START + 4 * H, {"predictions": failed, "transactions": failed}, None, end)
    refused = build_training_set(spec, settings, lake, START, end, as_of)
    assert refused["refused"] is True and len(refused["blocked"]) == 1
    assert f"interval {(START + 3 * H).isoformat()}" in refused["reason"]
    assert "stream transactions (the primary events, source of feature view card_activity" in refused["reason"]
    assert "predictions" not in refused["reason"], refused["reason"]

    acknowledge(lake, "fraud", START + 3 * H, "ops", "", end)
    block(lake, "fraud", START + 10 * H, START + 11 * H, {"chargebacks": failed}, None, end)
    labels = build_training_set(spec, settings, lake, START, end, as_of)
    assert labels["refused"] is True and "stream chargebacks (the labels)" in labels["reason"], labels
    assert f"--interval {(START + 10 * H).isoformat()} --end {(START + 11 * H).isoformat()}" in labels["reason"]


@pytest.mark.parametrize("action", ["alert", "retrain"])
def test_alert_and_retrain_report_without_blocking(tmp_path: Path, action: str) -> None:
    spec, lake, settings = landed_lake(tmp_path, **{"monitoring.quality.action": action})
    write_bad_events(spec, lake)
    result = _judge(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)
    txn = result["quality_transactions"]
    assert not txn.passed and txn.evidence["action"] == action and "blocked" not in txn.evidence
    assert not lake.list(f"{quality_blocks_prefix('fraud')}/")
    reasons = reasons_from_checks({"checks": [c.to_json() for c in result.values()]})
    assert (len(reasons) == 1 and reasons[0].startswith("quality_transactions:")) if action == "retrain" \
        else reasons == []


def test_volume_freshness_and_schema(judged: Any) -> None:
    spec, lake, settings, _ = judged
    late = START + 30 * H  # the simulated day is over: nothing lands in this hour
    empty = _judge(spec, settings, lake, late, late + H)["quality_transactions"]
    assert not empty.passed and empty.evidence["rows"] == 0
    assert ("expect_table_row_count_to_be_between", None) in _failed(empty)
    assert empty.evidence["volume"]["history"] == 5 and empty.evidence["volume"]["bounds"][0] > 0

    stale = _judge(spec, settings, lake, START + 20 * H, START + 28 * H)["quality_transactions"]
    assert ("expect_column_max_to_be_between", "event_time") in _failed(stale), stale.detail

    strings = pa.table({"transaction_id": ["s1"], "amount": ["12.5"], "event_time": [START + 10 * H]})
    topic = spec.events["transactions"].topic
    lake.write(f"{raw_prefix('fraud', topic)}/{hour_partition(START + 10 * H)}/{topic}+9+0.parquet", _parquet(strings))
    mixed = _judge(spec, settings, lake, START + 10 * H, START + 11 * H)["quality_transactions"]
    assert not mixed.passed and "do not share one schema" in mixed.detail


def _parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_on_an_s3_lake_docs_block_and_acknowledgement_live_in_the_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    """The same checks on S3 (moto's server: no real AWS is reachable from the test machines)."""
    import boto3

    bucket = f"quality-{tmp_path.name.lower().replace('_', '-')[:40]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    spec, lake, settings = landed_lake(tmp_path, settings={"lake_uri": f"s3://{bucket}/lake",
                                                           "s3_endpoint_url": s3_endpoint})
    write_bad_events(spec, lake)
    txn = _judge(spec, settings, lake, BAD_HOUR, BAD_HOUR + H)["quality_transactions"]
    assert not txn.passed and ("expect_column_values_to_be_in_set", "currency") in _failed(txn)
    docs = txn.evidence["data_docs"]
    assert docs.startswith(f"s3://{bucket}/lake/") and lake.exists(docs.removeprefix(f"{lake.uri}/"))
    [blocking] = unacknowledged(lake, "fraud", BAD_HOUR, BAD_HOUR + H)
    assert blocking["data_docs"] == docs
    acknowledge(lake, "fraud", BAD_HOUR, "ops", "known producer bug, fixed", BAD_HOUR + 2 * H)
    assert unacknowledged(lake, "fraud", BAD_HOUR, BAD_HOUR + H) == []
