"""Golden requests and the smoke test: what a candidate slot must answer before any traffic reaches it.

The golden requests are rows of the candidate's own holdout (the training-set snapshot named by the
version's ``ctloop.snapshot_id`` tag, split by ``training.training_set.split_by_time``), sent with
every feature value in the request (so the answer depends on the model alone, not on today's
online store), and their expected scores are the candidate's pyfunc on the same rows: the model as
MLflow loads it, outside any server. The smoke test sends them to the idle slot one request each and
passes when every score is within ``deploy.smoke_tolerance`` of its expectation, every answer names
the candidate's version, and the p99 latency is within ``deploy.smoke_p99_ms``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.lake.store import Lake

WARM_UP = 3  # requests sent first and not timed: a new process's first calls trace the model


class GoldenError(ValueError):
    """No golden requests can be made for a version (no snapshot tag, a snapshot gone); says why."""


@dataclass(frozen=True)
class Golden:
    bodies: list[dict[str, Any]]
    expected: list[float]
    snapshot_id: str
    holdout_rows: int


def golden_requests(spec: PipelineSpec, settings: Settings, lake: Lake, version: str) -> Golden:
    """``deploy.smoke_requests`` rows of the candidate's holdout as OIP v2 bodies, with the candidate's scores."""
    import mlflow

    from ctloop.registry.aliases import client
    from ctloop.serving.protocol import Signature
    from ctloop.training.training_set import SnapshotError, load_snapshot, split_by_time

    tags = client(settings).get_model_version(spec.registered_model, version).tags or {}
    snapshot_id = tags.get("ctloop.snapshot_id")
    if not snapshot_id:
        raise GoldenError(f"{spec.registered_model} v{version} has no ctloop.snapshot_id tag: no holdout to take "
                          "golden requests from")
    try:
        manifest, frame = load_snapshot(lake, spec, snapshot_id)
        holdout = split_by_time(spec, frame, datetime.fromisoformat(manifest["end"]))[2]
    except SnapshotError as exc:
        raise GoldenError(f"golden requests of v{version}: {exc}") from None
    rows = holdout.sample(n=min(spec.deploy.smoke_requests, len(holdout)), random_state=0).sort_index()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}/{version}")
    kinds = model.unwrap_python_model().kinds
    expected = model.predict(rows.reset_index(drop=True))["score"].astype(float).tolist()
    signature = Signature(spec, kinds)
    bodies = [infer_body(signature, row, f"golden-{i}") for i, row in enumerate(rows.to_dict("records"))]
    return Golden(bodies, expected, snapshot_id, len(holdout))


def infer_body(signature: Any, row: dict[str, Any], request_id: str) -> dict[str, Any]:
    """One row as an OIP v2 infer body carrying every input the model has, features included."""
    inputs = []
    for name, tensor in signature.tensors.items():
        value = _plain(row.get(name))
        if tensor.kind == "string" and value is not None:
            value = str(value)
        elif tensor.kind in ("double", "int") and value is not None:
            value = float(value) if tensor.kind == "double" else int(value)
        inputs.append({"name": name, "datatype": tensor.datatype, "shape": [1], "data": [value]})
    return {"id": request_id, "inputs": inputs}


def _plain(value: Any) -> Any:
    """numpy/pandas scalars as Python ones; NaN and missing as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def smoke_test(spec: PipelineSpec, golden: Golden, base_url: str, token: str, version: str,
               timeout_s: float = 30.0) -> dict[str, Any]:
    """Send the golden requests to one slot; the verdict with every number behind it."""
    import httpx

    url = f"{base_url.rstrip('/')}/v2/models/{spec.name}/infer"
    headers = {"Authorization": f"Bearer {token}"}
    deploy = spec.deploy
    latencies, worst, wrong_version, failures = [], 0.0, [], []
    with httpx.Client(timeout=timeout_s, headers=headers) as http:
        for body in golden.bodies[:WARM_UP]:
            http.post(url, json=body)
        for body, expected in zip(golden.bodies, golden.expected, strict=True):
            started = time.perf_counter()
            try:
                response = http.post(url, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{body['id']}: {exc!r}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures.append(f"{body['id']}: HTTP {response.status_code} {response.text[:200]}")
                continue
            answer = response.json()
            if str(answer.get("model_version")) != str(version):
                wrong_version.append(str(answer.get("model_version")))
            score = next(o["data"][0] for o in answer["outputs"] if o["name"] == "score")
            worst = max(worst, abs(float(score) - expected))
    latencies.sort()
    p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)] if latencies else None
    reasons = []
    if failures:
        reasons.append(f"{len(failures)} of {len(golden.bodies)} golden requests failed ({failures[0]})")
    if wrong_version:
        reasons.append(f"answered as version {wrong_version[0]}, not v{version}")
    if worst > deploy.smoke_tolerance:
        reasons.append(f"score off by {worst:.2e} > smoke_tolerance {deploy.smoke_tolerance:g}")
    if p99 is not None and p99 > deploy.smoke_p99_ms:
        reasons.append(f"p99 {p99:.1f} ms > smoke_p99_ms {deploy.smoke_p99_ms:g}")
    return {"passed": not reasons, "reasons": reasons, "requests": len(golden.bodies), "failed": len(failures),
            "max_score_diff": worst, "p99_ms": round(p99, 3) if p99 is not None else None,
            "snapshot_id": golden.snapshot_id, "url": url}
