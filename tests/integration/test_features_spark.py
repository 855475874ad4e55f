"""Spark clean + features on a small simulated lake: schema, dedupe, quarantine, idempotency by checksum,
late data recomputing the right partitions, and point-in-time correctness of every feature value."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from ctloop.config.spec import SpecError, load_spec, parse_spec
from ctloop.features.clean import clean, clean_pipeline
from ctloop.features.views import build_features
from ctloop.ingest.manifests import cleaned_until
from ctloop.lake.hours import parse_interval
from ctloop.lake.paths import curated_prefix, features_prefix, quarantine_prefix
from ctloop.lake.store import LocalLake

from tests.conftest import make_pipeline
from tests.features_helpers import read_dataset, simulate_tables, write_simulated_lake, write_table

START, END = parse_interval("2026-01-01", "2026-01-06")  # the 4 simulated days, and some


@pytest.fixture(scope="module")
def built(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-day lake with one zombie duplicate and two invalid rows, cleaned and featurised once."""
    tmp = tmp_path_factory.mktemp("features-spark")
    pipelines, _ = make_pipeline(tmp, **{"simulator.params.days": 4})
    spec = load_spec("fraud", pipelines)
    lake = LocalLake(tmp / "lake")
    tables = write_simulated_lake(lake, spec, 2500, seed=3)
    txns = tables["transactions"]
    write_table(lake, spec, "transactions", txns.slice(100, 1), partition=0, first_offset=90_000)  # zombie duplicate
    bad = txns.slice(200, 2).to_pylist()
    bad[0].update(transaction_id="bad-amount", amount=-5.0)
    bad[1].update(transaction_id="bad-currency", currency="XXX")
    bad_table = pa.Table.from_pylist(bad, schema=txns.schema)
    write_table(lake, spec, "transactions", bad_table, partition=1, first_offset=90_000)
    cleaned = clean_pipeline(spark, spec, lake, START, END)
    feats = build_features(spark, spec, lake, START, END)
    return {"spec": spec, "lake": lake, "tables": tables, "clean": cleaned, "features": feats, "pipelines": pipelines}


def test_clean_enforces_schema_dedupes_and_quarantines(built: dict[str, Any]) -> None:
    summary = built["clean"]["streams"]["transactions"]
    txns = built["tables"]["transactions"]
    assert summary["duplicates"] == 1
    assert summary["quarantined"] == 2
    assert summary["rows"] == txns.num_rows  # every valid id once, the duplicate dropped
    curated = read_dataset(built["lake"], curated_prefix("fraud", "transactions"))
    assert curated["transaction_id"].is_unique and len(curated) == txns.num_rows
    assert str(curated["event_time"].dtype).startswith("datetime64[us, UTC]")
    quarantine = read_dataset(built["lake"], quarantine_prefix("fraud", "transactions")).set_index("transaction_id")
    assert quarantine.loc["bad-amount", "quarantine_reason"] == "amount: below min 0.0"
    reason = quarantine.loc["bad-currency", "quarantine_reason"]
    assert reason.startswith("currency: not one of the allowed values, got 'XXX'")


def test_clean_and_features_are_idempotent_by_checksum(built: dict[str, Any], spark: Any) -> None:
    spec, lake = built["spec"], built["lake"]
    again = clean_pipeline(spark, spec, lake, START, END)
    for stream, first in built["clean"]["streams"].items():
        assert again["streams"][stream]["checksum"] == first["checksum"], stream
    feats = build_features(spark, spec, lake, START, END)
    for view, first in built["features"]["views"].items():
        assert feats["views"][view]["checksum"] == first["checksum"], view
        assert feats["views"][view]["rows"] == len(read_dataset(lake, features_prefix("fraud", view)))


def test_no_feature_value_uses_an_event_at_or_after_its_row(built: dict[str, Any]) -> None:
    """Recompute every feature from the curated events by brute force over [t - w, t)."""
    lake = built["lake"]
    txns = read_dataset(lake, curated_prefix("fraud", "transactions"))
    labels = read_dataset(lake, curated_prefix("fraud", "chargebacks"))
    card = read_dataset(lake, features_prefix("fraud", "card_activity"))
    merchant = read_dataset(lake, features_prefix("fraud", "merchant_risk"))
    assert len(card) == len(txns.drop_duplicates(["card_id", "event_time"]))
    by_card = {k: g.sort_values("event_time") for k, g in txns.groupby("card_id")}
    for row in card.sample(300, random_state=1).itertuples():
        events = by_card[row.card_id]
        t = row.event_timestamp
        for hours, spend, count in ((1, row.card_spend_1h, row.card_count_1h),
                                    (24, row.card_spend_24h, row.card_count_24h),
                                    (168, row.card_spend_7d, row.card_count_7d)):
            window = events[(events.event_time >= t - timedelta(hours=hours)) & (events.event_time < t)]
            assert count == len(window), (row, hours)
            assert spend == pytest.approx(window.amount.sum()), (row, hours)
        day = events[(events.event_time >= t - timedelta(hours=24)) & (events.event_time < t)]
        assert row.card_distinct_merchants_24h == day.merchant_id.nunique()
        assert row.card_online_count_24h == (day.channel == "online").sum()
    owners = txns.set_index("transaction_id")["merchant_id"]
    labels = labels.assign(merchant_id=labels.transaction_id.map(owners)).dropna(subset=["merchant_id"])
    assert len(labels) > 0
    for row in merchant.sample(300, random_state=2).itertuples():
        t, lo = row.event_timestamp, row.event_timestamp - timedelta(days=30)
        mine = txns[(txns.merchant_id == row.merchant_id) & (txns.event_time >= lo) & (txns.event_time < t)]
        reported = labels[(labels.merchant_id == row.merchant_id) & (labels.reported_at >= lo)
                          & (labels.reported_at < t)]
        assert row.merchant_count_30d == len(mine)
        assert row.merchant_chargeback_rate_30d == pytest.approx(len(reported) / len(mine) if len(mine) else 0.0)
    assert (merchant.merchant_chargeback_rate_30d > 0).any()


def test_late_events_recompute_the_partitions_they_touch(spark: Any, tmp_path: Path) -> None:
    pipelines, _ = make_pipeline(tmp_path, **{"simulator.params.days": 3})
    spec = load_spec("fraud", pipelines)
    lake = LocalLake(tmp_path / "lake")
    tables = write_simulated_lake(lake, spec, 1200, seed=4)
    day1, day2, day3 = (START + timedelta(days=d) for d in (1, 2, 3))
    clean_pipeline(spark, spec, lake, START, day2)
    build_features(spark, spec, lake, START, day2)
    # a late transaction for an active card, landed after its day was curated (inside the 2d lateness)
    txns = tables["transactions"].to_pandas()
    card = txns[txns.event_time < day1].card_id.value_counts().index[0]
    late = txns[txns.card_id == card].iloc[:1].copy()
    late_time = day1 + timedelta(hours=10, minutes=7)
    late = late.assign(transaction_id="late-1", event_time=late_time, amount=777.0)
    write_table(lake, spec, "transactions", pa.Table.from_pandas(late, schema=tables["transactions"].schema,
                                                                 preserve_index=False), 3, 50_000)
    summary = clean(spark, spec, lake, "transactions", day2, day3)
    assert summary["late_partitions"] == ["event_date=2026-01-02"]
    curated = read_dataset(lake, curated_prefix("fraud", "transactions"))
    assert (curated.transaction_id == "late-1").sum() == 1
    clean(spark, spec, lake, "chargebacks", day2, day3)
    feats = build_features(spark, spec, lake, day2, day3)
    view = feats["views"]["card_activity"]
    assert view["from"] == day1  # the whole day of the late event is rebuilt, and every later one
    assert view["late_inputs"] == ["transactions/event_date=2026-01-02"]
    rows = read_dataset(lake, features_prefix("fraud", "card_activity"))
    after = rows[(rows.card_id == card) & (rows.event_timestamp > late_time)
                 & (rows.event_timestamp <= late_time + timedelta(hours=24))]
    if len(after):  # the late amount is now in every later trailing 24h window of that card
        before = txns[(txns.card_id == card)]
        row = after.iloc[0]
        expected = before[(before.event_time >= row.event_timestamp - timedelta(hours=24))
                          & (before.event_time < row.event_timestamp)].amount.sum() + 777.0
        assert row.card_spend_24h == pytest.approx(expected)
    # a second run finds nothing late any more
    assert clean(spark, spec, lake, "transactions", day2, day3)["late_partitions"] == []
    # a re-run for an early hour rebuilds its day whole, and never moves how far the day is known back
    assert cleaned_until(lake, spec, "transactions") == day3
    clean(spark, spec, lake, "transactions", day2, day2 + timedelta(hours=1))
    assert cleaned_until(lake, spec, "transactions") == day3


def test_bad_where_is_named(spark: Any, built: dict[str, Any]) -> None:
    data = copy.deepcopy(built["spec"].model_dump(mode="json"))
    data["features"]["views"]["card_activity"]["aggregations"][7]["where"] = "chanel = 'online'"
    spec = parse_spec(data, "pipelines/fraud.yaml")
    with pytest.raises(SpecError, match=r"features\.views\.card_activity\.aggregations\[7\] \(card_online_count_24h\)"):
        build_features(spark, spec, built["lake"], START, START + timedelta(hours=1))


def test_simulated_tables_are_valid(built: dict[str, Any]) -> None:
    # sanity for the helper itself: the same seed gives the same events
    again = simulate_tables(built["spec"], 2500, seed=3)
    assert again["transactions"].equals(built["tables"]["transactions"])


def test_spark_sql_view_adds_its_columns(spark: Any, built: dict[str, Any]) -> None:
    """A view may come from Spark SQL over the curated streams instead of (or beside) aggregations."""
    data = copy.deepcopy(built["spec"].model_dump(mode="json"))
    data["features"]["views"] = {"card_sql": {
        "entity": "card", "source": "transactions", "ttl": "7d",
        "sql": "SELECT card_id, event_time AS event_timestamp, CAST(amount > 100 AS INT) AS big_amount,"
               " amount * 2 AS double_amount FROM transactions",
        "sql_features": {"big_amount": "int", "double_amount": "double"},
    }}
    spec = parse_spec(data, "pipelines/fraud.yaml")
    build_features(spark, spec, built["lake"], START, END)
    rows = read_dataset(built["lake"], features_prefix(spec.name, "card_sql"))
    curated = read_dataset(built["lake"], curated_prefix(spec.name, "transactions"))
    assert len(rows) == len(curated) > 0
    joined = rows.merge(curated, left_on=["card_id", "event_timestamp"], right_on=["card_id", "event_time"])
    assert len(joined) == len(rows)
    assert (joined.big_amount == (joined.amount > 100).astype(int)).all()
    assert (joined.double_amount == joined.amount * 2).all()

    data["features"]["views"]["card_sql"]["sql"] = "SELECT card_id FROM transactions"
    with pytest.raises(SpecError, match=r"features\.views\.card_sql\.sql: the query does not return \[.*'big_amount'"):
        build_features(spark, parse_spec(data, "pipelines/fraud.yaml"), built["lake"], START, END)
