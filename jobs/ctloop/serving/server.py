"""The model server of one blue-green slot: Open Inference Protocol v2 over HTTP (FastAPI on uvicorn).

Routes (``<pipeline>`` is the OIP model name; docs/serving.md has the request format):

- open: ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once model and feature store are loaded,
  503 before), ``GET /v2/models/<pipeline>/ready``, ``GET /v2`` (server metadata), ``GET /metrics``;
- bearer token (``Authorization: Bearer <token>``, see ``auth``): ``GET /v2/models/<pipeline>`` (inputs,
  outputs, version, slot, threshold), ``POST /v2/models/<pipeline>/infer`` (also under
  ``/versions/<version>/``), and every ``/admin`` route: ``POST /admin/faults`` ``{"error_rate": r}``
  makes that share of infer calls answer 500 (only with ``CTLOOP_SERVING_FAULT_INJECTION=true``; 404
  otherwise), ``GET /admin/faults``.

The server answers ``/v2/health/live`` at once and loads the model and the feature store in the
background; ``ctloop serve slot`` exits non-zero if that fails. Infer requests are validated
(``protocol``), batched with concurrent ones (``batcher``), scored (``scorer``), answered, then logged
(``prediction_log``) without waiting for Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec
from ctloop.serving import prediction_log
from ctloop.serving.auth import authorized
from ctloop.serving.batcher import Batcher
from ctloop.serving.metrics import ServingMetrics
from ctloop.serving.protocol import HEADER_LENGTH, ProtocolError, entity_keys, error_body, infer_response
from ctloop.serving.scorer import Scorer

SLOTS = ("blue", "green")
JSON = "application/json"


class Faults:
    """Deterministic fault injection: exactly ``error_rate`` of the infer calls fail (every 1/rate-th one)."""

    def __init__(self) -> None:
        self.error_rate = 0.0
        self._due = 0.0

    def set(self, error_rate: float) -> None:
        self.error_rate, self._due = error_rate, 0.0

    def fire(self) -> bool:
        if self.error_rate <= 0:
            return False
        self._due += self.error_rate
        if self._due >= 1.0 - 1e-9:
            self._due -= 1.0
            return True
        return False


class Slot:
    """What the routes share: the loaded scorer (once ready), the batcher, the log, the metrics, the token."""

    def __init__(self, spec: PipelineSpec, settings: Settings, *, slot: str, token: str,
                 load: Callable[[ServingMetrics], Any], log_predictions: bool = True) -> None:
        if not token:
            raise ValueError("the serving API needs a bearer token (see ctloop.serving.auth)")
        self.spec, self.settings, self.slot, self.token = spec, settings, slot, token
        self.metrics = ServingMetrics()
        self.faults = Faults()
        self.scorer: Any = None
        self.load_error: str | None = None
        self._load = load
        self.keys = entity_keys(spec)
        primary_id = spec.events[spec.primary].id_field
        self.log_keys = list(dict.fromkeys([primary_id, *self.keys]))
        self.event = None
        if log_predictions and spec.serving.predictions is not None:
            self.event = prediction_log.check_stream(spec, self.keys)  # a field it cannot fill fails now
        self.log: prediction_log.PredictionLog | None = None
        self.batcher = Batcher(self._score, max_batch_size=spec.serving.max_batch_size,
                               max_wait_ms=spec.serving.max_wait_ms, metrics=self.metrics)

    def _score(self, rows: list[dict[str, Any]]) -> Any:
        return self.scorer.score_batch(rows)

    async def start(self, on_load_error: Callable[[str], None] | None) -> None:
        self.batcher.start()
        if self.event is not None:
            self.log = prediction_log.PredictionLog(self.spec, self.settings, self.event, self.metrics)
        asyncio.get_running_loop().create_task(self._load_in_background(on_load_error))

    async def _load_in_background(self, on_load_error: Callable[[str], None] | None) -> None:
        try:
            self.scorer = await self.batcher.run_in_worker(self._load, self.metrics)
        except Exception as exc:  # noqa: BLE001 - reported by /v2/health/ready and the process exit
            self.load_error = f"{type(exc).__name__}: {exc}"
            print(f"[serving] {self.spec.name}/{self.slot}: the model could not be loaded: {self.load_error}",
                  file=sys.stderr, flush=True)
            if on_load_error is not None:
                on_load_error(self.load_error)
            return
        s = self.scorer
        self.metrics.model_info.labels(self.spec.name, s.model_name, s.version, s.alias or "", self.slot).set(1)
        self.metrics.ready.set(1)
        print(f"[serving] {self.spec.name}/{self.slot} ready: {s.model_name} v{s.version}", file=sys.stderr,
              flush=True)

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)
        if self.scorer is not None:
            self.scorer.close()


def create_app(spec: PipelineSpec, settings: Settings, *, slot: str, token: str, version: str | None = None,
               alias: str | None = None, store: Any = None, log_predictions: bool = True,
               on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """The ASGI app of one slot; the model loads when the app starts (its lifespan)."""
    if slot not in SLOTS:
        raise ValueError(f"slot: expected one of {SLOTS}, got {slot!r}")

    def load(metrics: ServingMetrics) -> Scorer:
        return Scorer(spec, settings, version=version, alias=alias, store=store, metrics=metrics)

    state = Slot(spec, settings, slot=slot, token=token, load=load, log_predictions=log_predictions)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.start(on_load_error)
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title=f"ctloop serving: {spec.name} ({slot})", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.slot = state
    _routes(app, state)
    return MetricsMiddleware(app, state.metrics)  # type: ignore[return-value]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _json(error_body(message), status, headers)


def _routes(app: FastAPI, state: Slot) -> None:
    spec, metrics = state.spec, state.metrics
    unauthorized = "missing or wrong bearer token (send `Authorization: Bearer <token>`)"

    def denied(request: Request) -> Response | None:
        if not authorized(request.headers.get("authorization"), state.token):
            return _error(401, unauthorized)
        return None

    def model_problem(name: str, version: str | None = None) -> Response | None:
        if name != spec.name:
            return _error(404, f"unknown model {name!r}: this server serves {spec.name!r}")
        if state.scorer is None:
            return _error(503, "the model is not loaded yet" + (f": {state.load_error}" if state.load_error else ""))
        if version is not None and version != state.scorer.version:
            return _error(404, f"unknown version {version!r} of model {name!r}: this slot serves version "
                               f"{state.scorer.version}")
        return None

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if state.scorer is not None:
            return _json({"ready": True})
        return _json({"ready": False, "error": state.load_error}, 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        from importlib.metadata import version as package_version

        return _json({"name": "ctloop", "version": package_version("ctloop"), "extensions": ["binary_tensor_data"]})

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        problem = model_problem(name, version)
        if problem is not None and problem.status_code == 404:
            return problem
        return _json({"name": name, "ready": problem is None}, 200 if problem is None else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        problem = denied(request) or model_problem(name, version)
        if problem is None:
            scorer = state.scorer
            return _json(scorer.signature.metadata(spec.name, scorer.version,
                                                   {"slot": state.slot, **scorer.parameters()}))
        return problem

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        problem = denied(request) or model_problem(name, version)
        if problem is not None:
            return problem
        scorer = state.scorer
        try:
            body = await _read_body(request, spec.serving.max_body_bytes)
            header = request.headers.get(HEADER_LENGTH)
            if header is not None and not header.isdigit():
                raise ProtocolError(400, f"{HEADER_LENGTH}: expected a number of bytes, got {header!r}")
            if request.headers.get("content-encoding", "identity") != "identity":
                raise ProtocolError(415, "content-encoding: compressed requests are not accepted")
            parsed = scorer.signature.parse(body, int(header) if header else None, spec.serving.max_rows)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        if state.faults.fire():
            metrics.faults.inc()
            return _error(500, "injected fault (POST /admin/faults)")
        try:
            scored, start, end = await state.batcher.submit(parsed.rows)
        except Exception as exc:  # noqa: BLE001 - the request fails, the server keeps serving
            return _error(500, f"scoring failed: {type(exc).__name__}: {exc}")
        request_id = uuid.uuid4().hex
        scores = scored.scores[start:end].tolist()
        decisions = scored.decisions[start:end].tolist()
        parameters = {"slot": state.slot, "request_id": request_id, "threshold": scorer.threshold,
                      "registered_model": scorer.model_name}
        answer = _json(infer_response(model_name=spec.name, version=scorer.version,
                                      request_id=parsed.client_id or request_id, outputs=parsed.outputs,
                                      scores=scores, decisions=decisions, parameters=parameters))
        if state.log is not None:
            state.log.offer(prediction_log.records(
                event=state.event, request_id=request_id, client_id=parsed.client_id, rows=parsed.rows,
                served=[scored.served(i) for i in range(start, end)], scores=scores, decisions=decisions,
                keys=state.log_keys, model=scorer.model_name, version=scorer.version, slot=state.slot,
                threshold=scorer.threshold, served_at=datetime.now(UTC)))
        return answer

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/faults")
    @app.post("/admin/faults")
    async def faults(request: Request) -> Response:
        problem = denied(request)
        if problem is not None:
            return problem
        if not state.settings.serving_fault_injection:
            return _error(404, "fault injection is off (CTLOOP_SERVING_FAULT_INJECTION=false)")
        if request.method == "POST":
            try:
                doc = msgspec.json.decode(await _read_body(request, 4096))
            except (msgspec.DecodeError, ProtocolError):
                return _error(400, "body: expected JSON {\"error_rate\": 0.0..1.0}")
            rate = doc.get("error_rate") if isinstance(doc, dict) else None
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                return _error(400, f"error_rate: expected a number in [0, 1], got {rate!r}")
            state.faults.set(float(rate))
            print(f"[serving] {spec.name}/{state.slot}: fault injection at error_rate={rate}", file=sys.stderr,
                  flush=True)
        return _json({"error_rate": state.faults.error_rate})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (header or streamed bytes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"request body: {int(declared)} bytes, over serving.max_body_bytes ({limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"request body: over serving.max_body_bytes ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


def _route(path: str) -> str:
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "infer"
        return "model_ready" if path.endswith("/ready") else "metadata"
    return {"/v2/health/live": "live", "/v2/health/ready": "ready", "/v2": "server_metadata",
            "/metrics": "metrics"}.get(path, "admin" if path.startswith("/admin") else "other")


class MetricsMiddleware:
    """Latency, requests and errors of every HTTP request, by route and status (a plain ASGI wrapper)."""

    def __init__(self, app: FastAPI, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics
        self.state = app.state  # tests reach the slot through the app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route(scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()


def run_slot(spec: PipelineSpec, settings: Settings, *, slot: str, port: int, host: str = "127.0.0.1",
             version: str | None = None, alias: str | None = None, token: str) -> int:
    """``ctloop serve slot``: serve in the foreground until SIGTERM/SIGINT; 1 if the model could not load."""
    import uvicorn

    failed: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_error(message: str) -> None:
        failed.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(spec, settings, slot=slot, token=token, version=version, alias=alias,
                     on_load_error=on_load_error)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    print(f"[serving] {spec.name}/{slot} listening on http://{host}:{port} (loading "
          f"{spec.registered_model} {'v' + version if version else '@' + (alias or 'champion')})",
          file=sys.stderr, flush=True)
    server.run()
    return 1 if failed else 0
