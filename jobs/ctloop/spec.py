"""Pipeline specs: ``pipelines/<name>.yaml`` parsed into typed, cross-checked models.

The spec is the single source of truth for a pipeline's event schemas, topics and landing policy,
so a second pipeline is a new YAML file, not a code change. Errors name the file, the field and
what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FieldType = Literal["string", "int", "double", "bool", "timestamp"]


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType
    required: bool = True
    description: str = ""
    allowed: list[str] | None = Field(None, description="For strings: the only values accepted.")
    min: float | None = Field(None, description="For numbers: smallest value accepted.")
    max: float | None = Field(None, description="For numbers: largest value accepted.")
    max_length: int | None = Field(None, gt=0, description="For strings: longest value accepted.")

    @model_validator(mode="after")
    def _constraints_fit_type(self) -> FieldSpec:
        if (self.allowed is not None or self.max_length is not None) and self.type != "string":
            raise ValueError(f"'allowed' and 'max_length' apply to string fields, not {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "double"):
            raise ValueError(f"'min' and 'max' apply to int and double fields, not {self.type}")
        return self


class EventSpec(_Strict):
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(4, ge=1, le=1024)
    key: str = Field(description="Field whose value is the Kafka message key (keeps an entity's events ordered).")
    id_field: str = Field(description="Unique event id: the lake holds each id exactly once.")
    time_field: str = Field(description="Event time: drives lake partitioning and file rotation.")
    max_event_bytes: int = Field(65_536, gt=0, description="Larger messages go to the dead-letter store.")
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _roles_name_fields(self) -> EventSpec:
        for role in ("key", "id_field", "time_field"):
            name = getattr(self, role)
            if name not in self.fields:
                raise ValueError(f"{role} {name!r} is not one of the fields ({', '.join(self.fields)})")
        if self.fields[self.time_field].type != "timestamp":
            raise ValueError(f"time_field {self.time_field!r} must have type timestamp")
        for role in ("id_field", "time_field", "key"):
            if not self.fields[getattr(self, role)].required:
                raise ValueError(f"{role} {getattr(self, role)!r} must be required")
        return self


class LabelSpec(_Strict):
    events: str = Field(description="Name of the event stream that carries labels.")
    join_key: str = Field(description="Field present in both the labelled and the label events.")
    target: str = Field("label", description="Name of the label column in training sets.")
    maturity_days: int = Field(
        30, ge=0, description="An event without a label counts as negative only this long after it happened."
    )


class IngestSpec(_Strict):
    consumer_group: str = ""
    flush_records: int = Field(100_000, gt=0, description="Close a file set after this many records.")
    flush_bytes: int = Field(128 * 2**20, gt=0, description="Close a file set after this many message bytes.")
    rotate_interval_s: int = Field(
        3600, gt=0, description="Close a file set when record time moves past this many seconds from its first record."
    )


class SimulatorSpec(_Strict):
    generator: str = Field(description="'module:Class' of the event generator used by `ctloop produce`.")
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    owner: str = "ml-platform"
    primary: str = Field(description="Name of the event stream the model scores (one row per event).")
    events: dict[str, EventSpec]
    labels: LabelSpec
    ingest: IngestSpec = IngestSpec()
    simulator: SimulatorSpec | None = None

    @model_validator(mode="after")
    def _cross_refs(self) -> PipelineSpec:
        if self.primary not in self.events:
            raise ValueError(f"primary {self.primary!r} is not one of the events ({', '.join(self.events)})")
        if self.labels.events not in self.events:
            raise ValueError(f"labels.events {self.labels.events!r} is not one of the events ({', '.join(self.events)})")
        for stream in (self.primary, self.labels.events):
            if self.labels.join_key not in self.events[stream].fields:
                raise ValueError(f"labels.join_key {self.labels.join_key!r} is not a field of events.{stream}")
        topics = [e.topic for e in self.events.values()]
        if len(set(topics)) != len(topics):
            raise ValueError(f"two event streams share a topic: {topics}")
        if not self.ingest.consumer_group:
            object.__setattr__(self, "ingest", self.ingest.model_copy(update={"consumer_group": f"ctloop-lander-{self.name}"}))
        return self

    @property
    def spec_hash(self) -> str:
        """Content hash of the parsed spec: lineage tags carry it so every artifact names its spec."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def stream_for_topic(self, topic: str) -> tuple[str, EventSpec]:
        for name, event in self.events.items():
            if event.topic == topic:
                return name, event
        raise KeyError(f"pipeline {self.name!r} has no event stream on topic {topic!r}")


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against docs/pipeline-spec.md)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
        msg = f"{msg}; got {err['input']!r}"
    return f"{field}: {msg}"


def parse_spec(data: Any, source: str) -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise SpecError(f"{source}: invalid pipeline spec:\n  {problems}") from None


def load_spec(pipeline: str, pipelines_dir: Path) -> PipelineSpec:
    """Load a spec by pipeline name (``pipelines/<name>.yaml``) or by path."""
    path = Path(pipeline) if pipeline.endswith((".yaml", ".yml")) else pipelines_dir / f"{pipeline}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in pipelines_dir.glob("*.yaml")) if pipelines_dir.is_dir() else []
        raise SpecError(f"{path}: no such pipeline spec (known pipelines in {pipelines_dir}: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: expected {path.stem!r} (the file's name), got {spec.name!r}")
    return spec
