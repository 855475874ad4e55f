"""The docs name every spec field and every setting the code accepts, so they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from ctloop.config.settings import Settings
from ctloop.config.spec import (
    AggregationSpec,
    AlertChannel,
    DeploySpec,
    DriftSpec,
    EntitySpec,
    EvaluationSpec,
    EventSpec,
    FeaturesSpec,
    FeatureViewSpec,
    FieldSpec,
    GateSpec,
    IngestSpec,
    LabelSpec,
    ModelSpec,
    MonitoredQualitySpec,
    MonitoringSpec,
    PerformanceSpec,
    PipelineSpec,
    QualitySpec,
    RetrainSpec,
    ServingSpec,
    SimulatorSpec,
    SliceSpec,
)
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]


def _documented(doc: str) -> set[str]:
    """Names in the first column of the doc's tables (a cell may list several: `min`, `max`)."""
    cells = re.findall(r"^\| ([^|]+)\|", doc, flags=re.M)
    return {name for cell in cells for name in re.findall(r"`([a-z][a-z0-9_]*)`", cell)}


def test_every_spec_field_is_documented() -> None:
    doc = (ROOT / "docs" / "pipeline-spec.md").read_text()
    documented = _documented(doc)
    models: list[type[BaseModel]] = [PipelineSpec, EventSpec, FieldSpec, LabelSpec, IngestSpec, SimulatorSpec,
                                     FeaturesSpec, EntitySpec, FeatureViewSpec, AggregationSpec, ModelSpec,
                                     EvaluationSpec, SliceSpec, GateSpec, QualitySpec, RetrainSpec, ServingSpec,
                                     DeploySpec, MonitoringSpec, DriftSpec, MonitoredQualitySpec, PerformanceSpec,
                                     AlertChannel]
    missing = {f"{m.__name__}.{name}" for m in models for name in m.model_fields if name not in documented}
    assert not missing, f"docs/pipeline-spec.md does not document: {sorted(missing)}"


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"CTLOOP_{name.upper()}" for name in Settings.model_fields if f"`CTLOOP_{name.upper()}`" not in readme]
    assert not missing, f"README.md does not document {missing}"
