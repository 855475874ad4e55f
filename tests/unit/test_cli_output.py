"""Job summaries are strict JSON: Airflow's XCom refuses NaN, which undefined metrics produce."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctloop.cli import Context
from ctloop.config.settings import load_settings


def test_undefined_numbers_become_null_in_stdout_and_the_result_file(tmp_path: Path, capsys) -> None:
    result = tmp_path / "xcom" / "return.json"
    Context(argparse.Namespace(result_file=str(result)), load_settings()).emit(
        {"slices": {"online": {"pr_auc": float("nan"), "rows": 3}}, "spread": [0.5, float("inf")]})
    expected = {"slices": {"online": {"pr_auc": None, "rows": 3}}, "spread": [0.5, None]}
    assert json.loads(capsys.readouterr().out) == expected
    assert json.loads(result.read_text(), parse_constant=lambda c: 1 / 0) == expected  # no NaN token either
