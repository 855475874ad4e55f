"""Racing retrain deciders, on a folder and on S3 (moto's server): whoever wins, exactly one run is accepted.

Two deciders of the same pipeline (a retried task, a CLI `ctloop retrain decide`, a second scheduler)
start together at a barrier, each with an acceptable request for its own run. Reading the ledger and
then appending let both accept; the accepted chain's create-if-absent lets one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from ctloop.config.spec import RetrainSpec
from ctloop.lake.store import Lake, LocalLake, S3Lake
from ctloop.retrain.ledger import Ledger, record_decisions
from ctloop.retrain.policy import Policy, RetrainRequest

POLICY = Policy.from_spec(RetrainSpec(cooldown="6h", daily_budget=4, merge_window="1h"))
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
TRIALS = 8


def race(lakes: list[Lake]) -> dict[str, dict[str, Any]]:
    """Each decider on its own lake client, released together; their results by run id."""
    barrier = threading.Barrier(len(lakes))
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def decider(lake: Lake, run_id: str) -> None:
        ledger = Ledger(lake, "fraud")
        request = RetrainRequest("fraud", f"asked by {run_id}", run_id, NOW, "api")
        barrier.wait()
        try:
            results[run_id] = record_decisions(ledger, POLICY, [request], run_id=run_id, now=NOW)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=decider, args=(lake, f"run-{i}")) for i, lake in enumerate(lakes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def assert_one_acceptance(results: dict[str, dict[str, Any]], lake: Lake) -> None:
    accepted = [run_id for run_id, r in results.items() if r["accepted"]]
    assert len(accepted) == 1, results
    for run_id, result in results.items():
        if run_id != accepted[0]:
            [decision] = result["decisions"]
            assert decision["outcome"] in ("merged", "refused"), decision
            assert decision["outcome"] == "refused" or decision["merged_into"] == accepted[0]
    records = Ledger(lake, "fraud").records()
    assert [r["run_id"] for r in records if r.get("outcome") == "accepted"] == accepted
    assert sorted(r["run_id"] for r in records) == sorted(results), "every decision is recorded"


@pytest.mark.parametrize("deciders", [2, 4])
def test_racing_deciders_on_a_folder_accept_once(tmp_path: Path, deciders: int) -> None:
    for trial in range(TRIALS):
        root = tmp_path / f"lake-{trial}"
        results = race([LocalLake(root) for _ in range(deciders)])
        assert_one_acceptance(results, LocalLake(root))


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def test_s3_create_is_conditional(s3_endpoint: str, bucket: str) -> None:
    """moto's server honours If-None-Match: * as S3 does (412 PreconditionFailed when the key exists)."""
    lake = S3Lake(bucket, "create", s3_endpoint)
    assert lake.create("_state/x/1.json", b"first") is True
    assert lake.create("_state/x/1.json", b"second") is False
    assert lake.read("_state/x/1.json") == b"first"


@pytest.mark.parametrize("deciders", [2, 4])
def test_racing_deciders_on_s3_accept_once(s3_endpoint: str, bucket: str, deciders: int) -> None:
    make: Callable[[str], Lake] = lambda prefix: S3Lake(bucket, prefix, s3_endpoint)  # noqa: E731
    for trial in range(TRIALS):
        prefix = f"race-{deciders}-{trial}"
        results = race([make(prefix) for _ in range(deciders)])  # clients made here: boto3's session is not thread-safe
        assert_one_acceptance(results, make(prefix))
