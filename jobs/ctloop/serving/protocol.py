"""Open Inference Protocol v2 (KServe, Triton, MLServer) for a ctloop model: what a request may carry,
its validation, and the JSON of answers and metadata.

A request names its tensors: the primary event's id field (``transaction_id``), the feature views'
entity keys (``card_id``, ``merchant_id``), the model's request fields (``amount``, ...), and
optionally every feature of the model (then no online lookup is made for it). Strings are ``BYTES``;
numbers ``FP64`` (any float or integer type is accepted for a number, any integer type for an int);
``BOOL`` for booleans. Shapes are ``[n]`` or ``[n, 1]``, one element per row, the same ``n`` for every
input. Tensor data comes as JSON (flat or nested, row-major) or in Triton's binary tensor extension
(``Inference-Header-Content-Length``), which ``tritonclient`` uses by default. ``null`` is accepted
where a value may be missing: in features (the model reads it as missing) and optional request fields.

Every refusal is a ``ProtocolError`` with an HTTP status and a message that names the input at fault.
Nothing here imports TensorFlow, pandas or Feast, so it is cheap to test and to import.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from ctloop.config.spec import PipelineSpec

HEADER_LENGTH = "inference-header-content-length"  # Triton's binary tensor extension
OUTPUTS = {"score": "FP64", "decision": "INT64"}
FLOATS = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
INTS = {"INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
        "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}
ACCEPTED = {"string": {"BYTES"}, "double": set(FLOATS) | set(INTS), "int": set(INTS), "bool": {"BOOL"}}
CANONICAL = {"string": "BYTES", "double": "FP64", "int": "INT64", "bool": "BOOL"}


class ProtocolError(Exception):
    """A request refused with ``status``; ``message`` names the input or limit at fault."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor the model's endpoint takes."""

    name: str
    kind: str  # string | double | int | bool
    role: str  # id | entity | request | feature
    nullable: bool
    max_length: int | None = None

    @property
    def datatype(self) -> str:
        return CANONICAL[self.kind]


@dataclass
class InferRequest:
    """A validated request: its rows (one dict per row, input name → value) and what it asked for."""

    rows: list[dict[str, Any]]
    client_id: str | None
    outputs: list[str]
    with_features: bool


def entity_keys(spec: PipelineSpec) -> list[str]:
    """The join keys of the entities the pipeline's feature views are keyed by, in spec order."""
    if spec.features is None:
        return []
    entities = spec.features.entities
    return list(dict.fromkeys(entities[view.entity].join_key for view in spec.features.views.values()))


class Signature:
    """The inputs and outputs of a pipeline's model endpoint, from the spec and the model's own input kinds.

    ``kinds`` are the model's inputs as saved next to it (``inputs.json``): features are those the spec's
    feature service serves, the rest come with the request and must be fields of the primary event.
    """

    def __init__(self, spec: PipelineSpec, kinds: dict[str, str]) -> None:
        primary = spec.events[spec.primary]
        served = spec.feature_columns
        self.features = [name for name in kinds if name in served]
        self.request_fields = [name for name in kinds if name not in served]
        unknown = [name for name in self.request_fields if name not in primary.fields]
        if unknown:
            raise ValueError(f"the model reads {unknown}, which are neither features of the feature service "
                             f"{spec.feature_service!r} nor fields of events.{spec.primary}")
        self.entity_keys = entity_keys(spec)
        self.id_field = primary.id_field
        tensors: dict[str, TensorSpec] = {}
        for name, role in [(self.id_field, "id"), *((k, "entity") for k in self.entity_keys),
                           *((f, "request") for f in self.request_fields)]:
            if name in tensors:
                continue
            field = primary.fields[name]
            kind = "double" if field.type == "timestamp" else field.type
            # ids and keys are logged as typed fields: longer than the spec allows, the log event would not land
            tensors[name] = TensorSpec(name, kind, role, nullable=role == "request" and not field.required,
                                       max_length=field.max_length if role != "request" else None)
        for name in self.features:
            tensors[name] = TensorSpec(name, "double", "feature", nullable=True)  # counts too: the model reads floats
        self.tensors = tensors
        self.required = [t for t in tensors.values() if t.role != "feature"]

    def metadata(self, name: str, version: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """``GET /v2/models/<name>``: every input (features last, optional as a group) and output."""
        return {
            "name": name, "versions": [version], "platform": "ctloop_keras",
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1]} for t in self.tensors.values()],
            "outputs": [{"name": o, "datatype": d, "shape": [-1]} for o, d in OUTPUTS.items()],
            "parameters": {**parameters, "required_inputs": [t.name for t in self.required],
                           "optional_inputs": self.features,
                           "optional_inputs_rule": "give every feature or none: when given, no online lookup"},
        }

    def parse(self, body: bytes, header_length: int | None, max_rows: int) -> InferRequest:
        """Validate an infer request body into rows; raise ProtocolError naming what is wrong."""
        if header_length is not None:
            if not 0 < header_length <= len(body):
                raise ProtocolError(400, f"{HEADER_LENGTH}: {header_length} is not within the body's "
                                         f"{len(body)} bytes")
            head, binary = body[:header_length], memoryview(body)[header_length:]
        else:
            head, binary = body, memoryview(b"")
        try:
            doc = msgspec.json.decode(head)
        except msgspec.DecodeError as exc:
            raise ProtocolError(400, f"request body: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ProtocolError(400, "request body: expected a JSON object with `inputs`")
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise ProtocolError(400, "inputs: expected a non-empty list of named tensors")
        client_id = doc.get("id")
        if client_id is not None and not isinstance(client_id, str):
            raise ProtocolError(400, f"id: expected a string, got {type(client_id).__name__}")
        columns: dict[str, list[Any]] = {}
        offset = 0
        for i, tensor in enumerate(inputs):
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise ProtocolError(400, f"inputs[{i}]: expected an object with a `name`")
            name = tensor["name"]
            spec = self.tensors.get(name)
            if spec is None:
                raise ProtocolError(400, f"input {name!r}: not an input of this model (inputs: "
                                         f"{', '.join(self.tensors)})")
            if name in columns:
                raise ProtocolError(400, f"input {name!r}: given twice")
            values, offset = self._tensor(spec, tensor, binary, offset)
            columns[name] = values
        if offset != len(binary):
            raise ProtocolError(400, f"binary data: {len(binary) - offset} bytes after the last tensor")
        missing = [t.name for t in self.required if t.name not in columns]
        if missing:
            first = self.tensors[missing[0]]
            raise ProtocolError(400, f"missing input {missing[0]!r} ({first.datatype}, shape [n])"
                                     + (f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""))
        given = [f for f in self.features if f in columns]
        if given and len(given) != len(self.features):
            absent = [f for f in self.features if f not in columns]
            raise ProtocolError(400, f"features: give every feature or none; missing input {absent[0]!r}"
                                     + (f" and {len(absent) - 1} more" if len(absent) > 1 else ""))
        rows_by_input = {name: len(values) for name, values in columns.items()}
        n = rows_by_input[self.id_field]
        disagree = {name: k for name, k in rows_by_input.items() if k != n}
        if disagree:
            name, k = next(iter(disagree.items()))
            raise ProtocolError(400, f"input {name!r}: {k} rows, but {self.id_field!r} has {n}")
        if n > max_rows:
            raise ProtocolError(413, f"inputs: {n} rows, over serving.max_rows ({max_rows})")
        outputs = self._outputs(doc.get("outputs"))
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        return InferRequest(rows, client_id, outputs, with_features=bool(given))

    def _tensor(self, spec: TensorSpec, tensor: dict[str, Any], binary: memoryview,
                offset: int) -> tuple[list[Any], int]:
        name = spec.name
        datatype = tensor.get("datatype")
        if datatype not in ACCEPTED[spec.kind]:
            wanted = spec.datatype + (" (or another numeric type)" if spec.kind == "double" else "")
            raise ProtocolError(400, f"input {name!r}: datatype {datatype!r}, expected {wanted}")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            raise ProtocolError(400, f"input {name!r}: shape {shape!r}, expected [n] or [n, 1]")
        n = shape[0]
        if n == 0:
            raise ProtocolError(400, f"input {name!r}: no rows (shape {shape})")
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(400, f"input {name!r}: binary_data_size {size!r} runs past the body")
            values = _from_binary(spec, datatype, binary[offset:offset + size], n)
            offset += size
        else:
            if "data" not in tensor:
                raise ProtocolError(400, f"input {name!r}: no `data` (and no binary_data_size)")
            values = _flatten(tensor["data"])
            if len(values) != n:
                raise ProtocolError(400, f"input {name!r}: shape {shape} but {len(values)} elements of data")
            values = [_check_json(spec, datatype, v, row) for row, v in enumerate(values)]
        if spec.max_length is not None:
            for row, v in enumerate(values):
                if v is not None and len(v) > spec.max_length:
                    raise ProtocolError(400, f"input {name!r} row {row}: {len(v)} characters, over its "
                                             f"max_length {spec.max_length}")
        return values, offset

    def _outputs(self, requested: Any) -> list[str]:
        if requested is None:
            return list(OUTPUTS)
        if not isinstance(requested, list):
            raise ProtocolError(400, "outputs: expected a list of {\"name\": ...}")
        names = []
        for i, out in enumerate(requested):
            name = out.get("name") if isinstance(out, dict) else None
            if name not in OUTPUTS:
                raise ProtocolError(400, f"outputs[{i}]: unknown output {name!r} (outputs: {', '.join(OUTPUTS)})")
            names.append(name)
        return names


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v))
    return out


def _check_json(spec: TensorSpec, datatype: str, value: Any, row: int) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ProtocolError(400, f"input {spec.name!r} row {row}: null, but a value is required")
    if datatype == "BYTES":
        if isinstance(value, str):
            return value
        raise ProtocolError(400, f"input {spec.name!r} row {row}: expected a string, got {value!r}")
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        raise ProtocolError(400, f"input {spec.name!r} row {row}: expected true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(400, f"input {spec.name!r} row {row}: expected a number, got {value!r}")
    if datatype in INTS and not (isinstance(value, int) or float(value).is_integer()):
        raise ProtocolError(400, f"input {spec.name!r} row {row}: expected an integer ({datatype}), got {value!r}")
    if isinstance(value, float) and not math.isfinite(value) and not spec.nullable:
        raise ProtocolError(400, f"input {spec.name!r} row {row}: {value!r} is not a finite number")
    return value


def _from_binary(spec: TensorSpec, datatype: str, raw: memoryview, n: int) -> list[Any]:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise ProtocolError(400, f"input {spec.name!r}: truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + length > len(raw):
                raise ProtocolError(400, f"input {spec.name!r}: truncated BYTES element")
            try:
                values.append(bytes(raw[at:at + length]).decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(400, f"input {spec.name!r} row {len(values)}: not UTF-8 text") from None
            at += length
        if len(values) != n:
            raise ProtocolError(400, f"input {spec.name!r}: shape says {n} rows, binary data holds {len(values)}")
        return values
    dtype = "?" if datatype == "BOOL" else FLOATS.get(datatype) or INTS[datatype]
    width = np.dtype(dtype).itemsize
    if len(raw) != n * width:
        raise ProtocolError(400, f"input {spec.name!r}: {len(raw)} bytes of {datatype}, expected {n * width} "
                                 f"for {n} rows")
    array = np.frombuffer(raw, dtype=dtype)
    if datatype in FLOATS and not spec.nullable and not np.isfinite(array).all():
        raise ProtocolError(400, f"input {spec.name!r}: NaN or infinite values, but a value is required")
    values = array.tolist()
    if spec.nullable and datatype in FLOATS:
        values = [None if v != v else v for v in values]  # NaN: missing
    return values


def infer_response(*, model_name: str, version: str, request_id: str, outputs: list[str], scores: list[float],
                   decisions: list[int], parameters: dict[str, Any]) -> dict[str, Any]:
    """The OIP answer: ``score`` (FP64) and ``decision`` (INT64), in the requested order."""
    data = {"score": scores, "decision": decisions}
    return {"model_name": model_name, "model_version": version, "id": request_id, "parameters": parameters,
            "outputs": [{"name": o, "datatype": OUTPUTS[o], "shape": [len(scores)], "data": data[o]}
                        for o in outputs]}


def error_body(message: str) -> dict[str, str]:
    """OIP errors are ``{"error": "<message>"}``."""
    return {"error": message}
