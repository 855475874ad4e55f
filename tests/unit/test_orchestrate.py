"""The pure helpers the DAGs' Airflow-side tasks call: intervals, verdicts and note lines."""

from __future__ import annotations

import pytest
from ctloop.orchestration.notes import (
    features_line,
    gate_verdict,
    landed_interval,
    landed_line,
    quality_verdict,
    reasons_from_checks,
    registered_line,
    union_interval,
)


def test_intervals() -> None:
    assert landed_interval({"landed": 0, "interval": None}) is None
    assert landed_interval({"landed": 5, "interval": ["a", "b"]}) == ["a", "b"]
    assert union_interval([["2026-01-02T00:00:00+00:00", "2026-01-02T03:00:00+00:00"], None,
                           ["2026-01-01T22:00:00+00:00", "2026-01-02T01:00:00+00:00"]]) == \
        ["2026-01-01T22:00:00+00:00", "2026-01-02T03:00:00+00:00"]
    with pytest.raises(ValueError, match="no interval"):
        union_interval([None])


def test_verdicts_and_lines() -> None:
    assert quality_verdict({"passed": True}) == (True, "data quality passed")
    assert quality_verdict({"passed": False, "reasons": ["label rate 0"]}) == \
        (False, "data quality refused: label rate 0")
    ok, line = gate_verdict({"passed": True, "candidate": {"overall": {"pr_auc": 0.61}},
                             "champion": {"version": "3", "overall": {"pr_auc": 0.6}}})
    assert ok and line == "evaluation gate passed: pr_auc 0.6100 vs champion 0.6000"
    ok, line = gate_verdict({"passed": False, "reasons": ["pr_auc 0.1 < 0.2"],
                             "candidate": {"overall": {"pr_auc": 0.1}}, "champion": None})
    assert not ok and line == "evaluation gate refused (pr_auc 0.1000, no champion yet): pr_auc 0.1 < 0.2"
    assert registered_line({"model": "ctloop-fraud", "version": "4", "alias": "challenger"}) == \
        "registered ctloop-fraud version 4 as challenger"
    assert reasons_from_checks({"checks": [{"name": "drift", "passed": False, "detail": "0.4 > 0.3"},
                                           {"name": "quality", "passed": True}]}) == ["drift: 0.4 > 0.3"]
    assert reasons_from_checks(None) == []
    assert landed_line({"landed": 1200, "dead_letters": 3, "files": 40, "interval": ["a", "b"]}) == \
        "landed 1,200 events (3 to the dead-letter topic) in 40 files, event time a to b: raw asset event emitted"
    assert landed_line({"landed": 0, "dead_letters": 2, "interval": None}) == \
        "nothing new landed (2 to the dead-letter topic): no raw asset event"
    assert features_line(["a", "b"], 5000) == \
        "features recomputed for a to b, 5,000 rows materialized to the online store: features asset event emitted"
