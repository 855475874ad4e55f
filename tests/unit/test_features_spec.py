"""The spec's features section: a bad feature definition fails at load time with a message naming it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ctloop.config.spec import SpecError, duration_seconds, load_spec, parse_spec
from ctloop.lake.hours import parse_interval

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = yaml.safe_load((ROOT / "pipelines" / "fraud.yaml").read_text())


def _with(patch) -> dict:
    data = copy.deepcopy(REFERENCE)
    patch(data["features"])
    return data


def test_reference_features_parse() -> None:
    spec = load_spec("fraud", ROOT / "pipelines")
    views = spec.features.views
    assert views["card_activity"].feature_types["card_count_1h"] == "int"
    assert views["merchant_risk"].feature_types["merchant_chargeback_rate_30d"] == "double"
    assert spec.feature_service == "fraud_model"
    assert duration_seconds("7d") == 7 * 86400


@pytest.mark.parametrize(("patch", "message"), [
    (lambda f: f["views"]["card_activity"]["aggregations"][2].update(window="7x"),
     "features.views.card_activity.aggregations[2].window: expected a duration like 1h/24h/7d, got '7x'"),
    (lambda f: f["views"]["card_activity"]["aggregations"][0].update(column="amout"),
     "features.views.card_activity.aggregations[0].column: 'amout' is not a field of events.transactions"),
    (lambda f: f["views"]["card_activity"]["aggregations"][0].update(column="country"),
     "features.views.card_activity.aggregations[0].column: sum needs a number, 'country' is string"),
    (lambda f: f["views"]["card_activity"].update(entity="cardholder"),
     "features.views.card_activity.entity: 'cardholder' is not one of features.entities"),
    (lambda f: f["views"]["merchant_risk"]["aggregations"][0].update(name="card_count_1h"),
     "features.views.merchant_risk: feature 'card_count_1h' is also defined in features.views.card_activity"),
    (lambda f: f["views"]["card_activity"]["aggregations"][1].update(function="median"),
     "features.views.card_activity.aggregations[1].function: Input should be"),
    (lambda f: f["entities"]["card"].update(join_key="card_number"),
     "features.entities.card.join_key: 'card_number' is not a field of events.transactions"),
    (lambda f: f["views"]["card_activity"]["aggregations"][1].update(column="amount"),
     "features.views.card_activity.aggregations[1]: column: count takes no column"),
])
def test_bad_feature_definition_is_named(patch, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_with(patch), "pipelines/fraud.yaml")
    assert "pipelines/fraud.yaml" in str(err.value)
    assert message in str(err.value), str(err.value)


def test_interval_parsing_names_the_flag() -> None:
    start, end = parse_interval("2026-01-03", "2026-01-04T06:00Z")
    assert (end - start).total_seconds() == 30 * 3600
    with pytest.raises(ValueError, match="--end: expected an ISO date"):
        parse_interval("2026-01-03", "tomorrow")
    with pytest.raises(ValueError, match="--start: the jobs work on whole hours"):
        parse_interval("2026-01-03T10:30", "2026-01-04")
