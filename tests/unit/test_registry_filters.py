"""Registry searches quote names for MLflow's filter syntax: a name with a quote cannot change the query."""

from __future__ import annotations

from pathlib import Path

import pytest
from ctloop.config.settings import load_settings
from ctloop.registry.aliases import AUDIT_EXPERIMENT, history, tags_filter
from mlflow.utils.search_utils import SearchUtils

# a model or alias name that closes the quote and adds a condition of its own
INJECTION = "fraud' and tags.`ctloop.alias` = 'champion"


@pytest.mark.parametrize("name", ["fraud", "O'Brien", 'say "hi"', INJECTION, "a\\b", "", "50%_off", "line\nbreak"])
def test_the_filter_says_exactly_these_tags(name: str) -> None:
    query = tags_filter({"ctloop.model": name, "ctloop.alias": "champion"})
    assert SearchUtils.parse_search_filter(query) == [
        {"type": "tag", "key": "ctloop.model", "comparator": "=", "value": name},
        {"type": "tag", "key": "ctloop.alias", "comparator": "=", "value": "champion"},
    ]


@pytest.mark.parametrize("name", ["both ' and \"", "ends in a backslash\\"])
def test_a_name_mlflow_cannot_express_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="MLflow's search filters cannot express"):
        tags_filter({"ctloop.model": name, "ctloop.alias": "champion"})


def test_history_finds_only_the_named_model(tmp_path: Path) -> None:
    """Against a real MLflow store (SQLite): the audit runs ``move_alias`` writes, for three models."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = MlflowClient(tracking_uri=uri)
    experiment = mlflow_client.create_experiment(AUDIT_EXPERIMENT)
    moves = [("fraud", "champion", "1"), ("fraud", "challenger", "2"), ("O'Brien", "champion", "7"),
             ('say "hi"', "champion", "9")]
    for model, alias, version in moves:
        mlflow_client.create_run(experiment, tags={"ctloop.model": model, "ctloop.alias": alias,
                                                   "ctloop.version": version})
    settings = load_settings(state_dir=tmp_path, mlflow_tracking_uri=uri)

    assert [m["version"] for m in history(settings, "O'Brien")] == ["7"]  # the old f-string: a syntax error
    assert [m["version"] for m in history(settings, 'say "hi"', "champion")] == ["9"]
    assert sorted(m["version"] for m in history(settings, "fraud")) == ["1", "2"]
    # the f-string filter read this as model = 'fraud' and alias = 'champion' and found version 1
    assert history(settings, INJECTION) == []
    assert history(settings, "fraud", "challenger' and tags.`ctloop.version` = '2") == []  # the f-string: ["2"]
    with pytest.raises(ValueError, match="cannot express"):
        history(settings, "fraud", "both ' and \"")
