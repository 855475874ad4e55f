"""The run-note listener's text (the listener itself runs in tests/dags/test_e2e_local.py)."""

from __future__ import annotations

from ctloop_airflow.notes import compose


def test_compose_lists_decisions_and_failures_and_keeps_a_human_note() -> None:
    assert compose([], [], None) is None
    assert compose(["retrain accepted — api: x"], ["train"], None) == \
        "ctloop:\n- retrain accepted — api: x\n- failed: train"
    assert compose(["a"], [], "checked by Ana") == "ctloop:\n- a\n\nchecked by Ana"
    assert compose(["b"], [], "ctloop:\n- a") == "ctloop:\n- b", "our own earlier note is replaced"
