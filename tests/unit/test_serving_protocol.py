"""The serving API's parts that need no model: OIP v2 request parsing (JSON and Triton's binary tensors),
the errors that name the field, the bearer token, dynamic batching, fault injection and the prediction log's
stream check. The server over HTTP, with a real model, Feast and Kafka, is tests/integration/test_serving.py."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ctloop.config.settings import load_settings
from ctloop.config.spec import PipelineSpec, SpecError, load_spec
from ctloop.serving.auth import TokenError, authorized, ensure_token, load_token
from ctloop.serving.batcher import Batcher
from ctloop.serving.prediction_log import check_stream, encode, records
from ctloop.serving.protocol import HEADER_LENGTH, ProtocolError, Signature, entity_keys
from ctloop.serving.server import Faults

from tests.conftest import ROOT, make_pipeline


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec("fraud", ROOT / "pipelines")


@pytest.fixture(scope="module")
def signature(spec: PipelineSpec) -> Signature:
    """The model's input kinds as training saves them (ctloop.training.model.input_kinds, without TensorFlow)."""
    fields = spec.events[spec.primary].fields
    kinds = {**{name: "number" for name in spec.feature_columns},
             **{f: "string" if fields[f].type == "string" else "number" for f in spec.model.request_fields}}
    return Signature(spec, kinds)


def _tensor(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


def _request(n: int = 2, **replace: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        "transaction_id": _tensor("transaction_id", "BYTES", [f"t{i}" for i in range(n)]),
        "card_id": _tensor("card_id", "BYTES", [f"c{i}" for i in range(n)]),
        "merchant_id": _tensor("merchant_id", "BYTES", [f"m{i}" for i in range(n)]),
        "amount": _tensor("amount", "FP64", [12.5 + i for i in range(n)]),
        "merchant_category": _tensor("merchant_category", "BYTES", ["grocery"] * n),
        "channel": _tensor("channel", "BYTES", ["pos"] * n),
        "country": _tensor("country", "BYTES", ["DE"] * n),
    }
    inputs.update(replace)
    return {"inputs": [t for t in inputs.values() if t is not None]}


def _parse(signature: Signature, doc: Any, max_rows: int = 100) -> Any:
    return signature.parse(json.dumps(doc).encode(), None, max_rows)


def test_inputs_are_the_id_the_entity_keys_and_the_request_fields(spec: PipelineSpec, signature: Signature) -> None:
    assert entity_keys(spec) == ["card_id", "merchant_id"]
    assert [t.name for t in signature.required] == ["transaction_id", "card_id", "merchant_id", "amount",
                                                    "merchant_category", "channel", "country"]
    assert signature.features == list(spec.feature_columns)
    meta = signature.metadata("fraud", "3", {"slot": "blue"})
    assert meta["versions"] == ["3"] and meta["parameters"]["slot"] == "blue"
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types["card_id"] == "BYTES" and types["amount"] == "FP64" and types["card_count_1h"] == "FP64"
    assert [o["name"] for o in meta["outputs"]] == ["score", "decision"]


def test_a_json_request_becomes_rows(signature: Signature) -> None:
    parsed = _parse(signature, {"id": "r-1", **_request(2), "outputs": [{"name": "score"}]})
    assert parsed.client_id == "r-1" and parsed.outputs == ["score"] and not parsed.with_features
    assert parsed.rows[1] == {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 13.5,
                              "merchant_category": "grocery", "channel": "pos", "country": "DE"}
    nested = _request(2, amount={"name": "amount", "datatype": "INT32", "shape": [2, 1], "data": [[3], [4]]})
    assert [r["amount"] for r in _parse(signature, nested).rows] == [3, 4]  # [n, 1], row-major, any numeric type


def test_features_come_all_together_and_may_be_null(spec: PipelineSpec, signature: Signature) -> None:
    features = {name: _tensor(name, "FP64", [1.0, None]) for name in spec.feature_columns}
    parsed = _parse(signature, _request(2, **features))
    assert parsed.with_features and parsed.rows[1]["card_spend_1h"] is None  # null: missing, as the model reads it
    del features["merchant_count_30d"]
    with pytest.raises(ProtocolError, match="give every feature or none; missing input 'merchant_count_30d'"):
        _parse(signature, _request(2, **features))


def test_binary_tensor_data_as_tritonclient_sends_it(signature: Signature) -> None:
    from tritonclient.utils import serialize_byte_tensor

    doc = _request(3)
    blobs = []
    for tensor in doc["inputs"]:
        values = tensor.pop("data")
        if tensor["datatype"] == "BYTES":
            blob = serialize_byte_tensor(np.array(values, dtype=object)).item()  # as InferInput does
        else:
            blob = np.array(values, dtype="<f8").tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    head = json.dumps(doc).encode()
    parsed = signature.parse(head + b"".join(blobs), len(head), 100)
    assert [r["card_id"] for r in parsed.rows] == ["c0", "c1", "c2"]
    assert [r["amount"] for r in parsed.rows] == [12.5, 13.5, 14.5]
    with pytest.raises(ProtocolError, match="binary_data_size .* runs past the body"):
        signature.parse(head + b"".join(blobs)[:-4], len(head), 100)
    with pytest.raises(ProtocolError, match=HEADER_LENGTH):
        signature.parse(head, len(head) + 10, 100)


@pytest.mark.parametrize("doc, status, message", [
    ({"inputs": []}, 400, "inputs: expected a non-empty list"),
    (_request(2, card_id=None), 400, "missing input 'card_id' (BYTES, shape [n])"),
    (_request(2, amount=_tensor("amount", "BYTES", ["1", "2"])), 400,
     "input 'amount': datatype 'BYTES', expected FP64 (or another numeric type)"),
    (_request(2, amount=_tensor("amount", "FP64", [1.0, "x"])), 400, "input 'amount' row 1: expected a number"),
    (_request(2, amount=_tensor("amount", "FP64", [1.0, None])), 400, "input 'amount' row 1: null"),
    (_request(2, card_id=_tensor("card_id", "BYTES", ["a", 7])), 400, "input 'card_id' row 1: expected a string"),
    (_request(2, amount=_tensor("amount", "FP64", [1.0])), 400, "input 'amount': 1 rows, but 'transaction_id' has 2"),
    (_request(2, amount={"name": "amount", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0]}), 400,
     "input 'amount': shape [3] but 2 elements"),
    (_request(2, amount={"name": "amount", "datatype": "FP64", "shape": [2, 2], "data": [1, 2, 3, 4]}), 400,
     "input 'amount': shape [2, 2], expected [n] or [n, 1]"),
    (_request(2, colour=_tensor("colour", "BYTES", ["red", "blue"])), 400, "input 'colour': not an input"),
    (_request(2, card_id=_tensor("card_id", "BYTES", ["x" * 65, "y"])), 400,
     "input 'card_id' row 0: 65 characters, over its max_length 64"),
    ({**_request(2), "outputs": [{"name": "probability"}]}, 400, "outputs[0]: unknown output 'probability'"),
    ({**_request(2), "id": 5}, 400, "id: expected a string"),
    (_request(101), 413, "inputs: 101 rows, over serving.max_rows (100)"),
    ([1, 2], 400, "request body: expected a JSON object"),
])
def test_refusals_name_the_field(signature: Signature, doc: Any, status: int, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        _parse(signature, doc)
    assert refused.value.status == status and message in refused.value.message, refused.value.message


def test_the_token_comes_from_the_variable_or_a_0600_file(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    with pytest.raises(TokenError, match="serving/token does not exist"):
        load_token(settings)
    token = ensure_token(settings)
    assert len(token) >= 40 and load_token(settings) == token == ensure_token(settings)  # created once
    assert stat.S_IMODE(settings.serving_token_file.stat().st_mode) == 0o600
    assert load_token(load_settings(state_dir=tmp_path, serving_token="from-a-secret")) == "from-a-secret"
    assert authorized(f"Bearer {token}", token) and authorized(f"bearer  {token} ", token)
    assert not authorized(None, token) and not authorized(token, token) and not authorized("Bearer nope", token)


def test_fault_injection_fails_exactly_that_share() -> None:
    faults = Faults()
    assert not any(faults.fire() for _ in range(10))
    faults.set(0.25)
    assert sum(faults.fire() for _ in range(100)) == 25
    faults.set(1.0)
    assert all(faults.fire() for _ in range(5))


def test_concurrent_requests_share_batches_up_to_the_size() -> None:
    calls: list[int] = []

    def score(rows: list[dict[str, Any]]) -> list[int]:
        calls.append(len(rows))
        return [r["i"] * 10 for r in rows]

    async def scenario() -> list[list[int]]:
        batcher = Batcher(score, max_batch_size=4, max_wait_ms=50)
        batcher.start()

        async def one(rows: list[dict[str, Any]]) -> list[int]:
            result, start, end = await batcher.submit(rows)
            return result[start:end]

        try:
            return await asyncio.gather(*[one([{"i": i}]) for i in range(10)], one([{"i": 7}] * 6))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert results[:10] == [[i * 10] for i in range(10)] and results[10] == [70] * 6  # each got its own rows
    assert sum(calls) == 16 and len(calls) < 11  # batched
    assert 6 in calls and all(c <= 4 for c in calls if c != 6)  # the 6-row request alone, the rest at most 4


def test_a_request_that_comes_alone_is_scored_without_waiting_for_company() -> None:
    """Waiting for company only when it comes: with a 10 s wait, a request into a quiet server is
    answered well inside it (the 5 s limit), a burst fills one batch, and a request that follows
    another within the wait still waits for the next one and shares its batch."""
    calls: list[int] = []

    def score(rows: list[dict[str, Any]]) -> list[int]:
        calls.append(len(rows))
        return [0] * len(rows)

    async def scenario() -> None:
        batcher = Batcher(score, max_batch_size=8, max_wait_ms=10_000)
        batcher.start()
        try:
            await asyncio.wait_for(batcher.submit([{}]), 5)  # alone: no wait
            await asyncio.wait_for(asyncio.gather(*[batcher.submit([{}]) for _ in range(8)]), 5)  # a full batch
            follower = asyncio.ensure_future(batcher.submit([{}]))  # 0.x s after the burst: traffic, so it waits
            await asyncio.sleep(0.3)
            assert not follower.done()
            await asyncio.wait_for(asyncio.gather(follower, *[batcher.submit([{}]) for _ in range(7)]), 5)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1, 8, 8]


def test_a_failed_batch_fails_its_requests_and_the_next_batch_works() -> None:
    def score(rows: list[dict[str, Any]]) -> list[int]:
        if any(r.get("bad") for r in rows):
            raise RuntimeError("feature store away")
        return [1] * len(rows)

    async def scenario() -> tuple[Any, Any]:
        batcher = Batcher(score, max_batch_size=8, max_wait_ms=0)
        batcher.start()
        try:
            failed = await asyncio.gather(batcher.submit([{"bad": True}]), return_exceptions=True)
            ok = await batcher.submit([{}])
            return failed[0], ok
        finally:
            await batcher.stop()

    failed, ok = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and ok == ([1], 0, 1)


def test_the_prediction_stream_must_hold_what_the_server_logs(spec: PipelineSpec, tmp_path: Path) -> None:
    event = check_stream(spec, entity_keys(spec))
    assert event.topic == "fraud.predictions" and event.id_field == "request_id"
    pipelines, _ = make_pipeline(tmp_path, **{"events.predictions.fields.colour": {"type": "string"},
                                              "events.predictions.fields.score": {"type": "string"}})
    bad = load_spec("fraud", pipelines)
    with pytest.raises(SpecError, match="'colour' is not something the server logs.*'score' has type string"):
        check_stream(bad, entity_keys(bad))


def test_records_get_one_id_per_prediction(spec: PipelineSpec) -> None:
    from datetime import UTC, datetime

    event = spec.events["predictions"]
    rows = [{"transaction_id": f"t{i}", "card_id": "c", "merchant_id": "m"} for i in range(2)]
    out = records(event=event, request_id="abc", client_id=None, rows=rows, served=[{"amount": 1.0}] * 2,
                  scores=[0.1, 0.9], decisions=[0, 1], keys=["transaction_id", "card_id", "merchant_id"],
                  model="ctloop-fraud", version="3", slot="blue", threshold=0.5, served_at=datetime.now(UTC))
    assert [r["request_id"] for r in out] == ["abc-0", "abc-1"] and out[1]["transaction_id"] == "t1"
    single = records(event=event, request_id="abc", client_id="x", rows=rows[:1], served=[{}], scores=[0.1],
                     decisions=[0], keys=["transaction_id"], model="m", version="3", slot="blue", threshold=0.5,
                     served_at=datetime.now(UTC))
    assert single[0]["request_id"] == "abc" and single[0]["client_id"] == "x"


def test_the_lander_accepts_what_the_server_logs(spec: PipelineSpec) -> None:
    """A logged prediction, encoded as the log thread sends it, passes the lander's validation of the stream."""
    from datetime import UTC, datetime

    from ctloop.ingest.events import EventCodec

    event = spec.events["predictions"]
    row = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1"}
    record = records(event=event, request_id="abc", client_id=None, rows=[row],
                     served=[{"amount": 12.5, "card_spend_1h": None, "channel": "pos"}], scores=[0.75],
                     decisions=[1], keys=["transaction_id", "card_id", "merchant_id"], model="ctloop-fraud",
                     version="3", slot="green", threshold=0.5, served_at=datetime.now(UTC))[0]
    key, value = encode(event, record)
    codec = EventCodec(event)
    accepted, rejected = codec.validate([value])
    assert accepted == [0] and not rejected and key == b"c1"
    landed = codec.to_table([value]).to_pylist()[0]
    assert landed["request_id"] == "abc" and landed["decision"] == 1 and landed["client_id"] is None
    assert json.loads(landed["features"]) == {"amount": 12.5, "card_spend_1h": None, "channel": "pos"}


def test_served_rows_become_the_same_model_inputs_as_a_training_frame() -> None:
    """Serving hands ``to_inputs`` column lists (no DataFrame per request); they must give training's arrays,
    nulls, NaN, bools, numeric strings and junk included."""
    import pandas as pd
    from ctloop.training.model import to_inputs

    kinds = {"n": "number", "m": "number", "s": "string"}
    columns = {"n": [1, None, 2.5, float("nan"), np.float64(3)], "m": [True, None, "3", "x", 2.5],
               "s": ["x", None, 1.5, float("nan"), True]}
    served, trained = to_inputs(kinds, columns), to_inputs(kinds, pd.DataFrame(columns))
    for name in kinds:
        assert served[name].shape == trained[name].shape == (5, 1) and served[name].dtype == trained[name].dtype
        np.testing.assert_array_equal(served[name], trained[name])


def test_the_model_server_opens_feast_for_online_lookups_only(spec: PipelineSpec, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Spark offline store (the kubernetes runtime's default) the server's store starts no Spark session:
    the serving image has no Java, and online lookups never need one. (Other tests share a session in this
    process, so the check is that nothing asks for one.)"""
    import ctloop.features.spark
    from ctloop.features.store import open_store

    def no_spark(*_: Any, **__: Any) -> None:
        raise AssertionError("the model server's Feast store started a Spark session")

    monkeypatch.setattr(ctloop.features.spark, "spark_session", no_spark)
    settings = load_settings(state_dir=tmp_path, runtime="kubernetes")
    assert settings.feast_offline_store == "spark"
    store = open_store(settings, spec, apply=False)
    assert store.config.offline_store.type == "spark"
    with pytest.raises(AssertionError, match="started a Spark session"):  # the jobs that apply do start one
        open_store(settings, spec)
