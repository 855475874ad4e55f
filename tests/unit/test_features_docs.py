"""docs/pipeline-spec.md documents every field of the features section the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

from ctloop.spec import AggregationSpec, EntitySpec, FeaturesSpec, FeatureViewSpec, PipelineSpec

ROOT = Path(__file__).resolve().parents[2]


def test_every_features_field_is_documented() -> None:
    doc = (ROOT / "docs" / "pipeline-spec.md").read_text()
    cells = re.findall(r"^\| ([^|]+)\|", doc, flags=re.M)
    documented = {name for cell in cells for name in re.findall(r"`([a-z_]+)`", cell)}
    models = [PipelineSpec, FeaturesSpec, EntitySpec, FeatureViewSpec, AggregationSpec]
    missing = {f"{m.__name__}.{n}" for m in models for n in m.model_fields if n not in documented}
    assert not missing, f"docs/pipeline-spec.md does not document: {sorted(missing)}"


def test_job_commands_are_documented() -> None:
    doc = (ROOT / "docs" / "features.md").read_text()
    for command in ("ctloop spark clean", "ctloop spark features", "ctloop materialize", "ctloop training-set",
                    "feast plan", "feast apply"):
        assert command in doc, command
