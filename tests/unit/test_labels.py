"""Labels and the training window: maturity follows the label stream's own watermark, a stray
future-dated event moves nothing, and the most recent days never turn into a holdout of positives.

The lake holds hand-written lander manifests and clean markers (the format `ctloop ingest` and
`ctloop spark clean` write); no broker or Spark is needed to decide a window.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from ctloop.config.spec import load_spec
from ctloop.ingest.manifests import label_watermark, landed_span
from ctloop.lake.hours import days
from ctloop.lake.paths import clean_marker, day_partition, hour_partition, manifest_prefix
from ctloop.lake.store import LocalLake
from ctloop.training.training_set import label_rows, latest_window

from tests.conftest import ROOT

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPEC = load_spec("fraud", ROOT / "pipelines")


def _land(lake: LocalLake, stream: str, start: datetime, end: datetime, *, offset: int = 0,
          event_time: datetime | None = None, sent: datetime | None = None) -> None:
    """One manifest with one raw file whose events span [start, end) (or one event at ``event_time``)."""
    topic = SPEC.events[stream].topic
    latest = event_time or end - timedelta(seconds=1)
    entry = {"kind": "raw", "rows": 10, "lake_partition": hour_partition(start), "first_offset": offset,
             "last_offset": offset + 9, "min_event_time": (event_time or start).isoformat(),
             "max_event_time": latest.isoformat(), "max_kafka_time": (sent or latest).isoformat()}
    manifest = {"pipeline": "fraud", "topic": topic, "partition": 0, "files": [entry]}
    lake.write(f"{manifest_prefix('fraud')}/{topic}/{topic}+0+{offset:020d}.json", json.dumps(manifest).encode())


def _clean(lake: LocalLake, stream: str, start: datetime, end: datetime) -> None:
    for day in days(start, end):
        until = min(day + timedelta(days=1), end).isoformat()
        lake.write(clean_marker("fraud", stream, day_partition(day)),
                   json.dumps({"files": [], "rows": 0, "hash": "0", "until": until}).encode())


@pytest.fixture
def lake(tmp_path: Path) -> LocalLake:
    lake = LocalLake(tmp_path / "lake")
    _land(lake, "transactions", T0, T0 + timedelta(days=80))
    _land(lake, "chargebacks", T0, T0 + timedelta(days=80), offset=100)
    _clean(lake, "chargebacks", T0, T0 + timedelta(days=80))
    return lake


def test_a_future_dated_event_does_not_move_the_window(lake: LocalLake) -> None:
    before = latest_window(lake, SPEC)
    # an event dated 2099, sent (Kafka timestamp) with the rest of the stream
    _land(lake, "transactions", T0 + timedelta(days=79), T0 + timedelta(days=80), offset=50,
          event_time=datetime(2099, 1, 1, tzinfo=UTC), sent=T0 + timedelta(days=79, hours=23))
    _land(lake, "chargebacks", T0 + timedelta(days=79), T0 + timedelta(days=80), offset=150,
          event_time=datetime(2099, 1, 1, tzinfo=UTC), sent=T0 + timedelta(days=79, hours=23))
    assert latest_window(lake, SPEC) == before
    assert before[2] == T0 + timedelta(days=80)
    assert landed_span(lake, SPEC)[1] == T0 + timedelta(days=80)


def test_maturity_follows_the_label_streams_watermark_not_the_transactions(lake: LocalLake) -> None:
    """Transactions landed to day 80, chargebacks landed to day 80 but cleaned only to day 60: a
    transaction is a settled negative only against day 60."""
    lagging = LocalLake(lake.root.parent / "lagging")
    _land(lagging, "transactions", T0, T0 + timedelta(days=80))
    _land(lagging, "chargebacks", T0, T0 + timedelta(days=80), offset=100)
    _clean(lagging, "chargebacks", T0, T0 + timedelta(days=60))
    assert label_watermark(lagging, SPEC) == T0 + timedelta(days=60)
    start, end, as_of = latest_window(lagging, SPEC)
    assert as_of == T0 + timedelta(days=60)
    assert end == (as_of - timedelta(days=SPEC.labels.maturity_days)).replace(hour=0)
    # and landed but not cleaned is not known either: the landed side bounds it too
    assert label_watermark(lake, SPEC) == T0 + timedelta(days=80)


def test_no_labels_yet_means_nothing_is_settled(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    _land(lake, "transactions", T0, T0 + timedelta(days=80))
    assert label_watermark(lake, SPEC) is None
    frame = pd.DataFrame({"transaction_id": ["a", "b"], "event_timestamp": [T0, T0 + timedelta(days=1)]})
    rows, left_out = label_rows(frame, pd.Index(["a"]), join="transaction_id", target="is_fraud", horizon=None,
                                maturity_days=7)
    assert rows.empty and left_out == 2


def test_the_most_recent_days_do_not_become_all_positives() -> None:
    """Before: rows inside the maturity window were kept when already reported (positive) and dropped
    otherwise, so an interval ending at the label horizon had a tail, the holdout, of positives only."""
    days = 20
    times = [T0 + timedelta(hours=h) for h in range(days * 24)]
    frame = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(len(times))], "event_timestamp": times})
    reported = pd.Index(frame.transaction_id[::10])  # 10% fraud, reported at once
    horizon = T0 + timedelta(days=days)
    rows, left_out = label_rows(frame, reported, join="transaction_id", target="is_fraud", horizon=horizon,
                                maturity_days=7)
    assert left_out == 7 * 24 - 1  # the row exactly 7 days before the horizon is settled
    assert rows.event_timestamp.max() + timedelta(days=7) <= horizon
    tail = rows[rows.event_timestamp >= rows.event_timestamp.max() - timedelta(days=3)]
    assert 0.05 < tail.is_fraud.mean() < 0.2, "the last days keep the stream's label rate"
    assert rows.is_fraud.sum() == rows.transaction_id.isin(reported).sum()


def test_labels_landed_after_as_of_on_its_day_keep_the_snapshot_id(tmp_path: Path) -> None:
    """The label fingerprint of a training set covers what it reads: on the day of ``as_of`` only the raw files
    before it, so chargebacks cleaned later that day do not give the same inputs a new snapshot id."""
    from ctloop.training.training_set import _label_fingerprint

    lake = LocalLake(tmp_path / "lake")
    topic = SPEC.events["chargebacks"].topic
    as_of = T0 + timedelta(days=1, hours=12)

    def marker(day: datetime, hours: list[int], rows: int) -> None:
        files = [f"raw/fraud/{topic}/{hour_partition(day + timedelta(hours=h))}/{topic}+0+{h:020d}.parquet"
                 for h in hours]
        lake.write(clean_marker("fraud", "chargebacks", day_partition(day)),
                   json.dumps({"files": files, "rows": rows, "hash": str(rows * 7), "until": "x"}).encode())

    marker(T0, [1, 5], 10)
    marker(T0 + timedelta(days=1), [3, 9], 4)
    before = _label_fingerprint(lake, SPEC, as_of)
    marker(T0 + timedelta(days=1), [3, 9, 15, 20], 9)  # cleaned again after more labels landed that afternoon
    assert _label_fingerprint(lake, SPEC, as_of) == before
    marker(T0 + timedelta(days=1), [3, 9, 11, 15, 20], 10)  # a label before as_of: the inputs did change
    assert _label_fingerprint(lake, SPEC, as_of) != before
    marker(T0, [1, 5, 6], 11)  # an earlier day changed
    assert _label_fingerprint(lake, SPEC, as_of) != before
