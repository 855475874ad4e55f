"""Event codecs: the spec's event schema compiled into a validating decoder and an Arrow schema.

Validation runs in C (msgspec) message by message, so one bad event is named precisely and never
spoils its neighbours; the accepted messages are then columnarised in bulk by Arrow's JSON reader.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.json as pa_json

from ctloop.config.spec import EventSpec, FieldSpec

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def _python_type(spec: FieldSpec) -> Any:
    if spec.type == "string":
        meta = msgspec.Meta(max_length=spec.max_length) if spec.max_length else None
        base: Any = Literal[tuple(spec.allowed)] if spec.allowed else str  # type: ignore[misc]
        return Annotated[base, meta] if meta and not spec.allowed else base
    if spec.type in ("int", "double"):
        base = int if spec.type == "int" else float
        bounds: dict[str, float] = {k: v for k, v in (("ge", spec.min), ("le", spec.max)) if v is not None}
        if base is int:  # msgspec takes integer bounds for ints: the integers within [min, max]
            bounds = {k: math.ceil(v) if k == "ge" else math.floor(v) for k, v in bounds.items()}
        return Annotated[base, msgspec.Meta(**bounds)] if bounds else base
    if spec.type == "timestamp":
        return Annotated[datetime, msgspec.Meta(tz=True)]  # naive times are ambiguous: refuse them
    return bool


def arrow_schema(event: EventSpec) -> pa.Schema:
    return pa.schema([pa.field(name, ARROW_TYPES[f.type], nullable=not f.required) for name, f in event.fields.items()])


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str


class EventCodec:
    """Validates raw messages of one event stream and turns the valid ones into an Arrow table."""

    def __init__(self, event: EventSpec) -> None:
        self.event = event
        fields = []
        for name, spec in event.fields.items():
            typ = _python_type(spec)
            fields.append((name, typ) if spec.required else (name, typ | None, None))
        struct = msgspec.defstruct("Event", fields, kw_only=True)
        self._decoder = msgspec.json.Decoder(struct)
        self.schema = arrow_schema(event)
        self._parse_options = pa_json.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore")

    def validate(self, values: list[bytes]) -> tuple[list[int], list[Rejection]]:
        """Split message indexes into accepted and rejected (with a reason naming the field)."""
        accepted: list[int] = []
        rejected: list[Rejection] = []
        limit = self.event.max_event_bytes
        decode = self._decoder.decode
        for i, value in enumerate(values):
            if value is None:
                rejected.append(Rejection(i, "empty message (tombstone)"))
                continue
            if len(value) > limit:
                rejected.append(Rejection(i, f"message of {len(value)} bytes exceeds max_event_bytes={limit}"))
                continue
            try:
                decode(value)
            except msgspec.ValidationError as exc:
                rejected.append(Rejection(i, f"schema: {exc}"))
            except msgspec.DecodeError as exc:
                rejected.append(Rejection(i, f"malformed JSON: {exc}"))
            else:
                accepted.append(i)
        return accepted, rejected

    def to_table(self, values: list[bytes]) -> pa.Table:
        """Columnarise already-validated messages (Arrow's multi-threaded JSON reader)."""
        if not values:
            return self.schema.empty_table()
        buffer = io.BytesIO(b"\n".join(values))
        block = max(1 << 20, len(buffer.getbuffer()) // 4 + 1)
        try:
            table = pa_json.read_json(buffer, read_options=pa_json.ReadOptions(block_size=block),
                                      parse_options=self._parse_options)
        except pa.ArrowInvalid:
            # A value msgspec accepts but Arrow's reader does not (rare timestamp spellings):
            # build the columns from the validated objects instead.
            rows = [msgspec.structs.asdict(self._decoder.decode(v)) for v in values]
            return pa.Table.from_pylist(rows, schema=self.schema)
        return table.select(self.schema.names).cast(self.schema)
