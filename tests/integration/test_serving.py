"""The model server against a real MLflow registry, a real Feast online store (SQLite) and the real broker.

One small model is trained, gated (``ctloop evaluate`` records its threshold), registered and promoted to
champion; a few holdout rows' features are materialized into Feast with recent timestamps. The server
runs twice: in this process (uvicorn on a thread, over real HTTP) for validation, auth, batching,
metrics and a broker that is down, and as ``ctloop serve slot`` for an unchanged ``tritonclient`` and the
prediction log, landed by ``ctloop ingest --until-caught-up``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, load_spec
from ctloop.lake.paths import day_partition, dlq_prefix, features_prefix, raw_prefix
from ctloop.lake.store import open_lake
from ctloop.sim.simulator import synthetic_training_frame
from ctloop.stack.service import free_port
from ctloop.training.training_set import split_by_time, write_snapshot

from tests.conftest import make_pipeline, settings_env, settings_for

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 20
TOKEN = "test-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = {"model.max_epochs": 4, "model.patience": 2, "model.hidden_units": [16], "model.batch_size": 512,
        "evaluation.holdout_days": "4d", "evaluation.precision_target": 0.5,
        "gate.floors": {"pr_auc": 0.2, "roc_auc": 0.75},
        "serving.max_batch_size": 8, "serving.max_wait_ms": 25, "serving.max_rows": 50,
        "serving.max_body_bytes": 20_000}
SERVED_ROWS = 24  # holdout rows whose features are in the online store


def _pipeline(tmp: Path, **overrides: Any) -> tuple[Path, PipelineSpec]:
    pipelines, _ = make_pipeline(tmp, **{**SPEC, "model.registered_name": f"ctloop-serving-{uuid.uuid4().hex[:8]}",
                                         **overrides})
    return pipelines, load_spec("fraud", pipelines)


def _settings(tmp: Path, broker: str, pipelines: Path, mlflow: str, project: str, **extra: Any) -> Settings:
    return settings_for(tmp, broker, pipelines, **{"mlflow_tracking_uri": mlflow, "feast_project": project,
                                                   "serving_token": TOKEN, "serving_fault_injection": True, **extra})


def _materialize(spec: PipelineSpec, settings: Settings, rows: pd.DataFrame, at: datetime) -> None:
    """Write ``rows``' feature values as the Spark features job would (one hour partition per view), then
    ``ctloop materialize`` them into the online store."""
    from ctloop.features.materialize import materialize

    lake = open_lake(settings)
    hour = at.replace(minute=0, second=0, microsecond=0)
    for view_name, view in spec.features.views.items():
        key = spec.features.entities[view.entity].join_key
        table = pa.table({key: rows[key].astype(str).tolist(),
                          "event_timestamp": pa.array([at] * len(rows), pa.timestamp("us", tz="UTC")),
                          "created_timestamp": pa.array([at] * len(rows), pa.timestamp("us", tz="UTC")),
                          **{f: pa.array(rows[f].tolist(), pa.int64() if t == "int" else pa.float64())
                             for f, t in view.feature_types.items()}})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        lake.write(f"{features_prefix(spec.name, view_name)}/{day_partition(hour)}/part-0.parquet",
                   sink.getvalue().to_pybytes())
    materialize(spec, settings, lake, hour, hour + timedelta(hours=1))


class ThreadServer:
    """The ASGI app on uvicorn in a thread of this process: real HTTP, TensorFlow imported once."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        _wait_ready(self.url, timeout_s=120)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} was not ready within {timeout_s}s")


def _metric(url: str, name: str, labels: str = "") -> float:
    """A sample's value from /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _oip(rows: list[dict[str, Any]], *, request_id: str | None = None) -> dict[str, Any]:
    """An OIP v2 JSON request from row dicts (strings as BYTES, numbers as FP64, None as null)."""
    inputs = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        sample = next((v for v in values if v is not None), 0.0)
        datatype = "BYTES" if isinstance(sample, str) else "FP64"
        values = [None if isinstance(v, float) and v != v else v for v in values]
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": values})
    return {"inputs": inputs, **({"id": request_id} if request_id else {})}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, broker: str, mlflow_server: str) -> Iterator[dict[str, Any]]:
    """A champion (trained, evaluated, registered, promoted), online features for some holdout rows, and the
    `ctloop serve slot` process (started here so it loads while the in-process tests run)."""
    from ctloop.evaluation.evaluate import evaluate
    from ctloop.registry.aliases import move_alias
    from ctloop.registry.register import register
    from ctloop.training.train import train

    tmp = tmp_path_factory.mktemp("serving")
    pipelines, spec = _pipeline(tmp)
    settings = _settings(tmp, broker, pipelines, mlflow_server, f"s{uuid.uuid4().hex[:10]}")
    frame = synthetic_training_frame(spec, 6_000, seed=11, start=START, days=DAYS)
    lake = open_lake(settings)
    write_snapshot(lake, spec, "snap", frame, start=START, end=START + timedelta(days=DAYS),
                   as_of=START + timedelta(days=DAYS + 30), sources={})
    trained = train(spec, settings, lake, "snap")
    decision = evaluate(spec, settings, lake, trained["run_id"])
    assert decision["passed"], decision["reasons"]
    registered = register(spec, settings, trained["run_id"])
    move_alias(settings, spec.registered_model, "champion", registered["version"], "serving tests")

    holdout = split_by_time(spec, frame, START + timedelta(days=DAYS))[2].reset_index(drop=True)
    served = holdout.iloc[:SERVED_ROWS].copy()
    ints = [f for f, t in spec.feature_columns.items() if t == "int"]
    served[ints] = served[ints].fillna(0)  # Spark's counts are never null
    _materialize(spec, settings, served, datetime.now(UTC) - timedelta(hours=1))

    port = free_port()
    log = open(tmp / "slot.log", "wb")
    slot = subprocess.Popen([sys.executable, "-m", "ctloop.cli", "serve", "slot", "--pipeline", "fraud", "--slot",
                             "green", "--port", str(port)], env=settings_env(settings), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        yield {"spec": spec, "settings": settings, "tmp": tmp, "pipelines": pipelines, "frame": frame,
               "holdout": holdout, "served": served, "trained": trained, "decision": decision,
               "version": registered["version"], "slot": slot, "slot_url": f"http://127.0.0.1:{port}",
               "slot_port": port, "slot_log": tmp / "slot.log"}
    finally:
        slot.terminate()
        slot.wait(30)
        log.close()


@pytest.fixture(scope="module")
def app_server(world: dict[str, Any]) -> Iterator[ThreadServer]:
    from ctloop.serving.server import create_app

    server = ThreadServer(create_app(world["spec"], world["settings"], slot="blue", token=TOKEN))
    yield server
    server.stop()


def _request_rows(world: dict[str, Any], n: int, *, features: bool = False) -> list[dict[str, Any]]:
    spec = world["spec"]
    names = ["transaction_id", "card_id", "merchant_id", *spec.model.request_fields]
    if features:
        names += list(spec.feature_columns)
    return _plain(world["served"][names].iloc[:n])


def _plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (NaN stays a float; _oip sends it as null)."""
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _pyfunc_scores(world: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    import mlflow

    mlflow.set_tracking_uri(world["settings"].mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{world['spec'].registered_model}/{world['version']}")
    return model.predict(frame)["score"].to_numpy(dtype="float64")


# -- in-process: the Python entry point ------------------------------------------------------------------
def test_direct_model_call_scores_like_the_pyfunc(world: dict[str, Any]) -> None:
    """Scorer (files from the registry, model called directly) vs the logged pyfunc, to 1e-6: on the holdout
    with its snapshot features, and on rows whose features come from the online store."""
    from ctloop.serving.scorer import Scorer

    scorer = Scorer(world["spec"], world["settings"])  # alias champion by default
    assert scorer.version == world["version"] and scorer.alias == "champion"
    holdout = world["holdout"]
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in holdout[list(scorer.kinds) + ["card_id", "merchant_id", "transaction_id"]].to_dict("records")]
    scores, decisions = scorer.score_rows(rows)
    np.testing.assert_allclose(scores, _pyfunc_scores(world, holdout), atol=1e-6)
    np.testing.assert_array_equal(decisions, (scores >= scorer.threshold).astype(int))

    looked_up, _ = scorer.score_rows(_request_rows(world, SERVED_ROWS))  # features from Feast
    np.testing.assert_allclose(looked_up, _pyfunc_scores(world, world["served"]), atol=1e-6)
    scorer.close()


def test_the_threshold_comes_from_the_evaluation(world: dict[str, Any]) -> None:
    from ctloop.registry.aliases import client

    version = client(world["settings"]).get_model_version(world["spec"].registered_model, world["version"])
    threshold = float(version.tags["ctloop.threshold"])  # evaluate tagged the run, register copied it
    assert threshold == world["decision"]["threshold"] and 0 < threshold < 1


# -- the ASGI app over HTTP ------------------------------------------------------------------------------------
def test_health_metadata_and_infer(app_server: ThreadServer, world: dict[str, Any]) -> None:
    url, spec = app_server.url, world["spec"]
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/models/fraud/ready").json() == {"name": "fraud", "ready": True}
    meta = httpx.get(f"{url}/v2/models/fraud", headers=AUTH).json()
    assert meta["name"] == "fraud" and meta["versions"] == [world["version"]]
    inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert inputs["card_id"] == "BYTES" and inputs["transaction_id"] == "BYTES" and inputs["amount"] == "FP64"
    assert set(spec.feature_columns) <= set(inputs) and meta["parameters"]["optional_inputs"] == list(
        spec.feature_columns)
    assert meta["outputs"] == [{"name": "score", "datatype": "FP64", "shape": [-1]},
                               {"name": "decision", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["slot"] == "blue"

    rows = _request_rows(world, 5)
    answer = httpx.post(f"{url}/v2/models/fraud/infer", json=_oip(rows, request_id="abc"), headers=AUTH).json()
    assert answer.get("model_name") == "fraud", answer
    assert answer["model_version"] == world["version"] and answer["id"] == "abc"
    assert answer["parameters"]["slot"] == "blue"
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["score"]["datatype"] == "FP64" and out["score"]["shape"] == [5]
    np.testing.assert_allclose(out["score"]["data"], _pyfunc_scores(world, world["served"].iloc[:5]), atol=1e-6)
    threshold = answer["parameters"]["threshold"]
    assert out["decision"]["data"] == [int(s >= threshold) for s in out["score"]["data"]]


def test_features_sent_with_the_request_are_used_instead_of_the_lookup(app_server: ThreadServer,
                                                                       world: dict[str, Any]) -> None:
    """The deploy smoke test sends golden rows with the snapshot's features: those are scored, not Feast's."""
    holdout = world["holdout"]
    golden = holdout.iloc[SERVED_ROWS:SERVED_ROWS + 6]  # none of these entities is in the online store
    names = ["transaction_id", "card_id", "merchant_id", *world["spec"].model.request_fields,
             *world["spec"].feature_columns]
    rows = _plain(golden[names])
    answer = httpx.post(f"{app_server.url}/v2/models/fraud/infer", json=_oip(rows), headers=AUTH).json()
    np.testing.assert_allclose(answer["outputs"][0]["data"], _pyfunc_scores(world, golden), atol=1e-6)
    partial = _oip([{k: v for k, v in r.items() if k != "card_spend_1h"} for r in rows])
    bad = httpx.post(f"{app_server.url}/v2/models/fraud/infer", json=partial, headers=AUTH)
    assert bad.status_code == 400 and "card_spend_1h" in bad.json()["error"]


@pytest.mark.parametrize("case, status, names", [
    ("no token", 401, "bearer token"),
    ("missing input", 400, "'card_id'"),
    ("wrong datatype", 400, "'amount'"),
    ("string in a number", 400, "'amount' row 0"),
    ("unknown input", 400, "'colour'"),
    ("unknown model", 404, "'nope'"),
    ("too many rows", 413, "serving.max_rows"),
    ("body too large", 413, "serving.max_body_bytes"),
    ("not json", 400, "request body"),
    ("too long an id", 400, "'transaction_id' row 0"),
])
def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving(
        app_server: ThreadServer, world: dict[str, Any], case: str, status: int, names: str) -> None:
    url = app_server.url
    rows = _request_rows(world, 1)
    body: Any = _oip(rows)
    model, headers, content = "fraud", AUTH, None
    if case == "no token":
        headers = {"Authorization": "Bearer wrong"}
    elif case == "missing input":
        body["inputs"] = [i for i in body["inputs"] if i["name"] != "card_id"]
    elif case == "wrong datatype":
        next(i for i in body["inputs"] if i["name"] == "amount")["datatype"] = "BYTES"
    elif case == "string in a number":
        next(i for i in body["inputs"] if i["name"] == "amount")["data"] = ["12.5"]
    elif case == "unknown input":
        body["inputs"].append({"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]})
    elif case == "unknown model":
        model = "nope"
    elif case == "too many rows":
        body = _oip(_request_rows(world, 1) * 51)
    elif case == "body too large":
        content = b'{"inputs": [' + b" " * 20_001 + b"]}"
    elif case == "not json":
        content = b"{nope"
    elif case == "too long an id":
        next(i for i in body["inputs"] if i["name"] == "transaction_id")["data"] = ["x" * 65]
    response = httpx.post(f"{url}/v2/models/{model}/infer", headers=headers,
                          **({"content": content} if content is not None else {"json": body}))
    assert response.status_code == status and names in response.json()["error"], response.text
    ok = httpx.post(f"{url}/v2/models/fraud/infer", json=_oip(rows), headers=AUTH)
    assert ok.status_code == 200


def test_auth_guards_metadata_and_admin_but_not_health(app_server: ThreadServer) -> None:
    url = app_server.url
    for method, path in [("GET", "/v2/models/fraud"), ("POST", "/v2/models/fraud/infer"), ("GET", "/admin/faults"),
                         ("POST", "/admin/faults")]:
        response = httpx.request(method, f"{url}{path}")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/fraud/ready", "/metrics"]:
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_concurrent_requests_are_batched(app_server: ThreadServer, world: dict[str, Any]) -> None:
    """24 one-row requests at once, batches of at most 8 rows: fewer model calls than requests, none over 8."""
    url = app_server.url
    calls_before = _metric(url, "ctloop_serving_batch_requests_count")
    requests_before = _metric(url, "ctloop_serving_batch_requests_sum")
    rows = _request_rows(world, SERVED_ROWS)
    barrier = threading.Barrier(len(rows))

    def one(row: dict[str, Any]) -> float:
        with httpx.Client() as client:
            barrier.wait(30)
            answer = client.post(f"{url}/v2/models/fraud/infer", json=_oip([row]), headers=AUTH, timeout=60)
        return answer.json()["outputs"][0]["data"][0]

    with ThreadPoolExecutor(len(rows)) as pool:
        scores = list(pool.map(one, rows))
    np.testing.assert_allclose(scores, _pyfunc_scores(world, world["served"]), atol=1e-6)  # each got its own
    calls = _metric(url, "ctloop_serving_batch_requests_count") - calls_before
    assert _metric(url, "ctloop_serving_batch_requests_sum") - requests_before == len(rows)
    assert 3 <= calls < len(rows)  # batched, and never more than 8 rows at once
    assert _metric(url, "ctloop_serving_batch_rows_bucket", 'le="8.0"') == _metric(url,
                                                                                   "ctloop_serving_batch_rows_count")


def test_metrics_cover_latency_status_model_and_feature_age(app_server: ThreadServer, world: dict[str, Any]) -> None:
    url = app_server.url
    httpx.post(f"{url}/v2/models/fraud/infer", json=_oip(_request_rows(world, 2)), headers=AUTH)
    httpx.post(f"{url}/v2/models/fraud/infer", json={"inputs": []}, headers=AUTH)
    text = httpx.get(f"{url}/metrics").text
    assert _metric(url, "ctloop_serving_request_seconds_count", 'route="infer"') >= 2
    assert _metric(url, "ctloop_serving_requests_total", 'route="infer",status="200"') >= 1
    assert _metric(url, "ctloop_serving_errors_total", 'route="infer",status="400"') >= 1
    model = world["spec"].registered_model
    assert f'ctloop_serving_model_info{{alias="champion",model="{model}",pipeline="fraud",slot="blue",' \
           f'version="{world["version"]}"}} 1.0' in text
    # the features were written an hour ago: every served age is between 1 and 6 hours
    assert _metric(url, "ctloop_serving_feature_age_seconds_count", 'view="card_activity"') >= 2
    assert _metric(url, "ctloop_serving_feature_age_seconds_bucket", 'le="3600.0",view="card_activity"') == 0
    assert _metric(url, "ctloop_serving_feature_age_seconds_bucket", 'le="21600.0",view="card_activity"') == \
        _metric(url, "ctloop_serving_feature_age_seconds_count", 'view="card_activity"')


def test_fault_injection_fails_that_share_of_infer_calls(app_server: ThreadServer, world: dict[str, Any]) -> None:
    url = app_server.url
    body = _oip(_request_rows(world, 1))
    set_rate = httpx.post(f"{url}/admin/faults", json={"error_rate": 0.5}, headers=AUTH)
    assert set_rate.status_code == 200 and set_rate.json() == {"error_rate": 0.5}
    try:
        codes = [httpx.post(f"{url}/v2/models/fraud/infer", json=body, headers=AUTH).status_code for _ in range(10)]
    finally:
        httpx.post(f"{url}/admin/faults", json={"error_rate": 0.0}, headers=AUTH)
    assert codes.count(500) == 5 and codes.count(200) == 5
    bad = httpx.post(f"{url}/admin/faults", json={"error_rate": 2}, headers=AUTH)
    assert bad.status_code == 400 and "error_rate" in bad.json()["error"]


def test_with_the_broker_down_requests_are_answered_and_the_overflow_is_counted(
        world: dict[str, Any], tmp_path: Path) -> None:
    """Prediction log bound 3, no broker: all 7 requests answered, 3 wait in the queue, 4 dropped and counted.
    Fault injection is off here: its admin route is a 404."""
    from ctloop.serving.server import create_app

    pipelines, spec = _pipeline(tmp_path, **{"serving.log_queue": 3,
                                             "model.registered_name": world["spec"].registered_model})
    same = world["settings"]  # same registry, lake and online store; a broker nobody listens on
    settings = _settings(world["tmp"], f"127.0.0.1:{free_port()}", pipelines, same.mlflow_tracking_uri,
                         same.feast_project, serving_fault_injection=False)
    server = ThreadServer(create_app(spec, settings, slot="green", token=TOKEN))
    try:
        body = _oip(_request_rows(world, 1))
        codes = [httpx.post(f"{server.url}/v2/models/fraud/infer", json=body, headers=AUTH).status_code
                 for _ in range(7)]
        assert codes == [200] * 7
        assert _metric(server.url, "ctloop_serving_predictions_dropped_total", 'reason="queue_full"') == 4
        assert _metric(server.url, "ctloop_serving_prediction_log_queue") == 3
        assert _metric(server.url, "ctloop_serving_prediction_log_connected") == 0
        assert httpx.post(f"{server.url}/admin/faults", json={"error_rate": 1}, headers=AUTH).status_code == 404
    finally:
        server.stop()


# -- `ctloop serve slot`, tritonclient and the prediction log ---------------------------------------------------
@pytest.fixture(scope="module")
def slot_url(world: dict[str, Any]) -> str:
    try:
        _wait_ready(world["slot_url"], timeout_s=240, proc=world["slot"])
    except AssertionError:
        print(world["slot_log"].read_text()[-4000:])
        raise
    return world["slot_url"]


def test_tritonclient_works_unchanged(slot_url: str, world: dict[str, Any]) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=slot_url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud")
    meta = client.get_model_metadata("fraud", headers=dict(AUTH))  # tritonclient adds to the dict it is given
    assert meta["versions"] == [world["version"]] and meta["parameters"]["slot"] == "green"
    rows = world["served"].iloc[:4]
    inputs = []
    for name in ["transaction_id", "card_id", "merchant_id", *world["spec"].model.request_fields]:
        strings = rows[name].dtype == object
        array = rows[name].to_numpy(dtype=object if strings else np.float64)
        tensor = triton.InferInput(name, list(array.shape), "BYTES" if strings else "FP64")
        tensor.set_data_from_numpy(array)  # binary tensor data: tritonclient's default
        inputs.append(tensor)
    result = client.infer("fraud", inputs, headers=dict(AUTH))
    np.testing.assert_allclose(result.as_numpy("score"), _pyfunc_scores(world, rows), atol=1e-6)
    assert result.as_numpy("decision").dtype == np.int64
    response = result.get_response()
    assert response["model_version"] == world["version"] and response["parameters"]["slot"] == "green"
    with pytest.raises(InferenceServerException) as denied:
        client.infer("fraud", inputs)
    assert "401" in str(denied.value.status()) or "bearer" in str(denied.value.message()).lower()


def test_every_answered_prediction_lands_in_the_lake_exactly_once(slot_url: str, world: dict[str, Any]) -> None:
    """Answered requests (one- and three-row) are logged; refused and faulted ones are not. The lander lands
    the predictions stream like any other: one row per answered prediction, with what was served."""
    spec, settings = world["spec"], world["settings"]
    answered: list[str] = []
    with httpx.Client(headers=AUTH, timeout=30) as client:
        logged_before = _metric(slot_url, "ctloop_serving_predictions_logged_total")
        for i, row in enumerate(_request_rows(world, 6)):
            answer = client.post(f"{slot_url}/v2/models/fraud/infer", json=_oip([row], request_id=f"lake-{i}"))
            answered.append(answer.json()["parameters"]["request_id"])
        triple = client.post(f"{slot_url}/v2/models/fraud/infer",
                             json=_oip(_request_rows(world, 3), request_id="lake-3rows")).json()
        answered += [f"{triple['parameters']['request_id']}-{i}" for i in range(3)]
        refused = client.post(f"{slot_url}/v2/models/fraud/infer", json={"id": "lake-refused", "inputs": []})
        assert refused.status_code == 400
        assert client.post(f"{slot_url}/admin/faults", json={"error_rate": 1.0}).status_code == 200
        faulted = client.post(f"{slot_url}/v2/models/fraud/infer",
                              json=_oip(_request_rows(world, 1), request_id="lake-faulted"))
        assert faulted.status_code == 500
        client.post(f"{slot_url}/admin/faults", json={"error_rate": 0.0})
    deadline = time.monotonic() + 60
    while _metric(slot_url, "ctloop_serving_predictions_logged_total") - logged_before < len(answered):
        assert time.monotonic() < deadline, "the broker did not acknowledge every prediction"
        time.sleep(0.2)
    land = subprocess.run([sys.executable, "-m", "ctloop.cli", "ingest", "--pipeline", "fraud", "--until-caught-up"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=180, check=False)
    assert land.returncode == 0, land.stderr[-3000:]
    lake = open_lake(settings)
    topic = spec.events["predictions"].topic
    files = [p for p in lake.list(raw_prefix(spec.name, topic)) if p.endswith(".parquet")]
    table = pd.concat([pq.read_table(io.BytesIO(lake.read(p))).to_pandas() for p in files])
    assert table["request_id"].is_unique  # (the other tests' predictions are in the same stream)
    mine = table[table["client_id"].fillna("").str.startswith("lake-")]
    assert sorted(mine["request_id"]) == sorted(answered)  # one row per answered prediction, none for the others
    assert not lake.list(dlq_prefix(spec.name, topic))
    row = mine[mine["client_id"] == "lake-0"].iloc[0]
    expected = world["served"].iloc[0]
    assert row["transaction_id"] == expected["transaction_id"] and row["card_id"] == expected["card_id"]
    assert row["model_version"] == world["version"] and row["slot"] == "green"
    assert row["decision"] == int(row["score"] >= row["threshold"])
    served = json.loads(row["features"])
    assert served["card_spend_24h"] == pytest.approx(expected["card_spend_24h"])  # from the online store
    assert served["amount"] == pytest.approx(expected["amount"]) and served["channel"] == expected["channel"]
