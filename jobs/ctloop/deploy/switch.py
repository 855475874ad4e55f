"""The local traffic switch: one port in front of each pipeline's blue and green slots (``ctloop serve switch``).

What routes the traffic: this process, an HTTP/1.1 reverse proxy on raw asyncio streams (uvloop when
installed). Every request is routed on its own: the switch reads the pipeline's live-slot pointer
when the request has been read, and forwards it over a pooled keep-alive connection to that slot.
A switch is one assignment of that pointer (``POST /admin/pipelines/<p>/switch``), so:

* no request is dropped or split: a request already forwarded finishes on the slot it went to
  (its connection, its response), and every request read after the assignment goes to the new one;
  client connections stay open across the switch (routing is per request, not per connection);
* the old slot stays up (warm) after the switch, so those in-flight requests complete and a rollback
  is one more assignment; it is stopped only when ``retire`` says so (``deploy.keep_old`` later).

The switch also supervises the slot processes (``ctloop serve slot``, children of this process, so
``ctloop stack down`` stops them with it), restores them and the live pointer from
``<state_dir>/serving/switch.json`` when it restarts, and serves the ``champion`` in the blue slot of
each pipeline that has nothing live. It counts every forwarded request per slot (``stats``): what the
deploy's watch reads. Its admin API (``/admin/...``, bearer token: ``CTLOOP_SERVING_TOKEN`` or the
token file) is what ``ctloop deploy`` and ``ctloop rollback`` drive; see docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ctloop.config.settings import Settings
from ctloop.deploy.stats import RollingStats

SLOTS = ("blue", "green")
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                        b"content-length"})
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 2**20
UPSTREAM_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 600.0
POOL_SIZE = 256
POOL_IDLE_S = 2.0  # a pooled connection idle this long is closed, not reused (uvicorn closes its idle ones at 5 s)
_MODEL_PATH = re.compile(r"^/v2/models/([^/?]+)")
_ADMIN_PATH = re.compile(r"^/admin/pipelines/([a-z][a-z0-9_]{0,62})/([a-z]+)(?:/([a-z]+))?$")
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def state_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "serving"


def state_file(settings: Settings) -> Path:
    return state_dir(settings) / "switch.json"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Slot:
    """One slot's process: which version it serves, on which port, and how it is doing."""

    name: str
    version: str | None = None
    port: int | None = None
    state: str = "stopped"  # stopped | starting | ready | failed
    reason: str = ""
    pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    retire_at: float | None = None
    process: asyncio.subprocess.Process | None = None
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(default_factory=list)
    stats: RollingStats = field(default_factory=RollingStats)
    generation: int = 0  # bumped on every (re)load: a late readiness probe of an older load is ignored

    @property
    def header(self) -> bytes:
        """Added to every response the slot gives through the switch: who answered."""
        return f"x-ctloop-slot: {self.name}\r\nx-ctloop-model-version: {self.version}\r\n".encode()

    def public(self, live: bool) -> dict[str, Any]:
        return {"slot": self.name, "version": self.version, "state": "live" if live and self.state == "ready"
                else ("warm" if self.state == "ready" else self.state), "process": self.state, "reason": self.reason,
                "port": self.port, "url": f"http://127.0.0.1:{self.port}" if self.port else None, "pid": self.pid,
                "started_at": self.started_at, "ready_at": self.ready_at, "retire_at": self.retire_at}


@dataclass
class Route:
    """A pipeline's two slots and the pointer to the live one."""

    pipeline: str
    live: str | None = None
    switched_at: float | None = None
    slots: dict[str, Slot] = field(default_factory=lambda: {s: Slot(s) for s in SLOTS})
    lease: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        lease = self.lease if self.lease and self.lease["expires"] > time.time() else None
        return {"pipeline": self.pipeline, "live": self.live, "switched_at": self.switched_at, "lease": lease,
                "slots": {n: s.public(n == self.live) for n, s in self.slots.items()}}


class Switch:
    def __init__(self, settings: Settings, token: str, port: int, *, host: str = "127.0.0.1",
                 bootstrap_champions: bool = True) -> None:
        self.settings = settings
        self.token = token.encode()
        self.port = port
        self.host = host
        self.routes: dict[str, Route] = {}
        self.bootstrap_champions = bootstrap_champions
        self.dir = state_dir(settings)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._restored = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_HEAD,
                                                  reuse_address=True, backlog=1024)
        self._log(f"listening on http://{self.host}:{self.port}")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._spawn(self._restore_then_settle())
        self._spawn(self._housekeeping())
        await stop.wait()
        self._stopping = True
        self._log("stopping: the slots first")
        self._server.close()
        await asyncio.gather(*(self._stop_slot(s) for r in self.routes.values() for s in r.slots.values()),
                             return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log(self, message: str) -> None:
        print(f"[switch] {time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    def route(self, pipeline: str) -> Route:
        if pipeline not in self.routes:
            self.routes[pipeline] = Route(pipeline)
        return self.routes[pipeline]

    # -- state on disk ------------------------------------------------------------------------
    def _save(self) -> None:
        data = {"pipelines": {p: {"live": r.live, "switched_at": r.switched_at,
                                  "slots": {n: {"version": s.version, "port": s.port, "pid": s.pid,
                                                "retire_at": s.retire_at}
                                            for n, s in r.slots.items() if s.version and s.state != "stopped"}}
                              for p, r in self.routes.items()}}
        path = state_file(self.settings)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    async def _restore_then_settle(self) -> None:
        try:
            await self._restore()
        finally:
            self._restored = True

    async def _restore(self) -> None:
        """Bring back the slots and live pointers of the last run; a pipeline with nothing live (a first start,
        or no champion at the last one) gets its champion, if it has one by now."""
        path = state_file(self.settings)
        saved = json.loads(path.read_text()) if path.exists() else {}
        for pipeline, data in saved.get("pipelines", {}).items():
            route = self.route(pipeline)
            route.live, route.switched_at = data.get("live"), data.get("switched_at")
            for name, slot in data.get("slots", {}).items():
                _kill_stale(slot.get("pid"))
                await self.load(pipeline, name, slot["version"], port=slot.get("port"))
                route.slots[name].retire_at = slot.get("retire_at")
        if self.bootstrap_champions:
            await self._serve_champions()
        self._save()

    def _monitoring_metrics(self) -> bytes:
        """Each pipeline's newest ``ctloop monitor`` figures, as it wrote them (the Pushgateway's part, locally)."""
        from ctloop.lake.paths import monitor_latest_metrics
        from ctloop.lake.store import open_lake

        lake, parts = open_lake(self.settings), []
        for spec_file in sorted(Path(self.settings.pipelines_dir).glob("*.yaml")):
            path = monitor_latest_metrics(spec_file.stem)
            if lake.exists(path):
                parts.append(lake.read(path))
        return b"".join(parts)

    async def _serve_champions(self) -> None:
        from ctloop.config.spec import load_spec

        try:
            names = sorted(p.stem for p in Path(self.settings.pipelines_dir).glob("*.yaml")
                           if p.stem not in self.routes or self.routes[p.stem].live is None)
            if not names:
                return
            champions = await asyncio.to_thread(_champions, self.settings, names, load_spec)
        except Exception as exc:  # noqa: BLE001 - no registry, no champion: serve nothing, say why
            self._log(f"no champion served: {exc}")
            return
        for pipeline, version in champions.items():
            self._log(f"{pipeline}: serving the champion, version {version}, in blue")
            route = self.route(pipeline)
            await self.load(pipeline, "blue", version)
            route.live, route.switched_at = "blue", time.time()

    # -- slots --------------------------------------------------------------------------------
    async def load(self, pipeline: str, name: str, version: str, *, port: int | None = None) -> Slot:
        """(Re)start slot ``name`` of ``pipeline`` serving ``version``; returns at once (state ``starting``)."""
        from ctloop.stack.service import free_port, port_in_use

        route = self.route(pipeline)
        slot = route.slots[name]
        await self._stop_slot(slot)
        if port is None or port_in_use(port):
            port = free_port()
        slot.version, slot.port, slot.state, slot.reason = str(version), port, "starting", ""
        slot.started_at, slot.ready_at, slot.generation = time.time(), None, slot.generation + 1
        slot.stats = RollingStats()
        log = self.dir / f"{pipeline}-{name}.log"
        argv = [sys.executable, "-m", "ctloop.cli", "serve", "slot", "--pipeline", pipeline, "--slot", name,
                "--port", str(port), "--version", str(version)]
        with open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv[2:])}\n".encode())
            out.flush()
            slot.process = await asyncio.create_subprocess_exec(
                *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        slot.pid = slot.process.pid
        self._log(f"{pipeline}/{name}: starting version {version} on port {port} (pid {slot.pid}, log {log})")
        self._save()
        self._spawn(self._await_ready(pipeline, slot, slot.generation, log))
        return slot

    async def _await_ready(self, pipeline: str, slot: Slot, generation: int, log: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and slot.generation == generation:
            if slot.process is None or slot.process.returncode is not None:
                code = slot.process.returncode if slot.process else None
                slot.state, slot.reason = "failed", f"exited with {code} before it was ready: {_tail(log)}"
                self._log(f"{pipeline}/{slot.name}: {slot.reason}")
                self._save()
                return
            if await _get_status(slot.port, "/v2/health/ready") == 200:
                slot.state, slot.ready_at = "ready", time.time()
                self._log(f"{pipeline}/{slot.name}: version {slot.version} ready "
                          f"in {slot.ready_at - (slot.started_at or slot.ready_at):.1f}s")
                return
            await asyncio.sleep(0.2)
        if slot.generation == generation:
            slot.state, slot.reason = "failed", f"not ready within {READY_TIMEOUT_S:.0f}s: {_tail(log)}"
            await self._stop_slot(slot, keep_state=True)
            self._save()

    async def _stop_slot(self, slot: Slot, *, keep_state: bool = False) -> None:
        process, slot.process = slot.process, None
        for _, writer, _ in slot.pool:
            writer.close()
        slot.pool.clear()
        if not keep_state:
            slot.state, slot.reason, slot.retire_at = "stopped", "", None
        slot.generation += 1
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _housekeeping(self) -> None:
        """Retire old slots when their time comes; restart a live slot whose process died."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for pipeline, route in self.routes.items():
                for name, slot in route.slots.items():
                    if slot.retire_at and now >= slot.retire_at and name != route.live:
                        self._log(f"{pipeline}/{name}: retired (version {slot.version}), its rollback window over")
                        slot.retire_at = None
                        await self._stop_slot(slot)
                        self._save()
                    elif (slot.state == "ready" and slot.process is not None and slot.process.returncode is not None
                          and not self._stopping):
                        self._log(f"{pipeline}/{name}: process exited ({slot.process.returncode}); restarting")
                        if name == route.live:
                            await self.load(pipeline, name, slot.version or "", port=slot.port)
                        else:
                            slot.state, slot.reason = "failed", f"exited with {slot.process.returncode}"
                            self._save()

    # -- HTTP ---------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _HttpError as exc:
                    await _respond(writer, exc.status, {"error": str(exc)}, close=True)
                    return
                if request is None:
                    return
                method, target, headers, body, keep_alive = request
                path = target.split(b"?", 1)[0].decode("latin-1")
                if path.startswith("/admin/"):
                    status, payload = await self._admin(method.decode(), target.decode("latin-1"), headers, body)
                    await _respond(writer, status, payload, close=not keep_alive)
                elif path == "/v2/health/live":
                    await _respond(writer, 200, {"live": True}, close=not keep_alive)
                elif path == "/healthz":  # the stack's check: up, and no slot still loading
                    settled = self._settled()
                    await _respond(writer, 200 if settled else 503, {"live": True, "settled": settled},
                                   close=not keep_alive)
                elif path == "/v2/health/ready":
                    ready = self._ready()
                    await _respond(writer, 200 if ready else 503, {"ready": ready}, close=not keep_alive)
                elif path == "/metrics":  # the local runtime's Prometheus endpoint for the monitor's figures
                    text = await asyncio.to_thread(self._monitoring_metrics)
                    await _respond(writer, 200, text, close=not keep_alive)
                else:
                    match = _MODEL_PATH.match(path)
                    route = self.routes.get(match.group(1)) if match else None
                    if route is None or route.live is None:
                        why = (f"pipeline {match.group(1)!r} has no live slot" if match else
                               "not found: models are served under /v2/models/<pipeline>/")
                        await _respond(writer, 503 if match else 404, {"error": why}, close=not keep_alive)
                    else:
                        await self._forward(route, method, target, headers, body, writer, keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def _settled(self) -> bool:
        return self._restored and not any(s.state == "starting" for r in self.routes.values()
                                          for s in r.slots.values())

    def _ready(self) -> bool:
        live = [r.slots[r.live] for r in self.routes.values() if r.live]
        return bool(live) and all(s.state == "ready" for s in live)

    async def _forward(self, route: Route, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        slot = route.slots[route.live]  # the pointer is read once, here: this request stays on this slot
        started = time.perf_counter()
        head = [method + b" " + target + b" HTTP/1.1\r\n"]
        head += [k + b": " + v + b"\r\n" for k, v in headers if k not in HOP_BY_HOP]
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        request = b"".join(head) + body
        try:
            status, response, reusable = await asyncio.wait_for(
                self._exchange(slot, request, method == b"HEAD"), UPSTREAM_TIMEOUT_S)
        except TimeoutError:
            slot.stats.record(time.perf_counter() - started, True)
            await _respond(writer, 504, {"error": f"slot {slot.name} did not answer in {UPSTREAM_TIMEOUT_S:.0f}s"},
                           close=not keep_alive)
            return
        except (OSError, asyncio.IncompleteReadError, _HttpError) as exc:
            slot.stats.record(time.perf_counter() - started, True)
            await _respond(writer, 502, {"error": f"slot {slot.name} failed: {exc!r}"}, close=not keep_alive)
            return
        slot.stats.record(time.perf_counter() - started, status >= 500)
        extra = slot.header + (b"connection: close\r\n" if not keep_alive else b"")
        response = response.replace(b"\r\n", b"\r\n" + extra, 1)
        writer.write(response)
        await writer.drain()

    async def _exchange(self, slot: Slot, request: bytes, head_only: bool) -> tuple[int, bytes, bool]:
        """Send one request to ``slot``; (status, the response bytes to relay, connection reusable).

        Pooled connections idle longer than ``POOL_IDLE_S`` are closed rather than reused, before the slot
        closes them; one the slot closed anyway fails before any response byte, and the request is sent once
        more on a fresh connection (the slot never read it)."""
        port = slot.port
        now = time.monotonic()
        while slot.pool and (now - slot.pool[-1][2] > POOL_IDLE_S or slot.pool[-1][1].is_closing()):
            slot.pool.pop()[1].close()
        for attempt in range(2):
            pooled = bool(slot.pool) and attempt == 0
            if pooled:
                reader, writer, _ = slot.pool.pop()
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_HEAD)
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                if pooled and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                    continue
                raise
            status, response, reusable = await _read_response(reader, head, head_only)
            if reusable and len(slot.pool) < POOL_SIZE and slot.port == port and slot.process is not None:
                slot.pool.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return status, response, reusable
        raise ConnectionError("unreachable")

    # -- admin API ----------------------------------------------------------------------------
    async def _admin(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> tuple[int, Any]:
        auth = dict(headers).get(b"authorization", b"")
        if not (auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token)):
            return 401, {"error": "the admin API needs `Authorization: Bearer <serving token>`"}
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            data = json.loads(body) if body else {}
            if url.path == "/admin/state" and method == "GET":
                return 200, {"pipelines": {p: r.public() for p, r in self.routes.items()}, "port": self.port,
                             "pid": os.getpid()}
            match = _ADMIN_PATH.match(url.path)
            if match is None:
                return 404, {"error": f"no admin endpoint {url.path}"}
            pipeline, action, slot = match.groups()
            return await self._admin_action(method, pipeline, action, slot, data, query)
        except _HttpError as exc:
            return exc.status, {"error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"bad request: {exc}"}

    async def _admin_action(self, method: str, pipeline: str, action: str, slot_name: str | None,
                            data: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        route = self.route(pipeline)
        if slot_name is not None and slot_name not in SLOTS:
            raise _HttpError(404, f"no slot {slot_name!r}: blue or green")
        if action == "slots" and slot_name and method == "PUT":
            self._check_lease(route, data.get("owner"))
            if slot_name == route.live:
                raise _HttpError(409, f"{pipeline}/{slot_name} is live: load the idle slot")
            version = str(data["version"])
            if not re.fullmatch(r"[0-9]+", version):
                raise _HttpError(400, f"version: expected a model version number, got {version!r}")
            slot = await self.load(pipeline, slot_name, version)
            return 202, slot.public(False)
        if action == "slots" and slot_name and method == "DELETE":
            self._check_lease(route, query.get("owner"))
            if slot_name == route.live:
                raise _HttpError(409, f"{pipeline}/{slot_name} is live: switch away from it first")
            await self._stop_slot(route.slots[slot_name])
            self._save()
            return 200, route.slots[slot_name].public(False)
        if action == "switch" and method == "POST":
            return 200, self.switch(route, data["slot"], expect=data.get("expect", "any"), owner=data.get("owner"))
        if action == "retire" and method == "POST":
            slot = route.slots[data["slot"]]
            slot.retire_at = time.time() + float(data.get("after_s", 0))
            self._save()
            return 200, slot.public(data["slot"] == route.live)
        if action == "stats" and method == "GET":
            slot = route.slots[query.get("slot") or route.live or "blue"]
            since = float(query["since"]) if "since" in query else None
            until = float(query["until"]) if "until" in query else None
            return 200, {"pipeline": pipeline, "slot": slot.name, "version": slot.version, "now": time.time(),
                         **slot.stats.summary(since, until)}
        if action == "lease" and method == "POST":
            owner, now = str(data["owner"]), time.time()
            if route.lease and route.lease["expires"] > now and route.lease["owner"] != owner:
                raise _HttpError(409, f"{pipeline}: a deploy is in progress ({route.lease['owner']}, until "
                                      f"{time.strftime('%H:%M:%S', time.localtime(route.lease['expires']))})")
            route.lease = {"owner": owner, "expires": now + float(data.get("ttl_s", 900))}
            return 200, route.lease
        if action == "lease" and method == "DELETE":
            if route.lease and route.lease["owner"] == query.get("owner"):
                route.lease = None
            return 200, {"released": True}
        raise _HttpError(405, f"{method} /admin/pipelines/{pipeline}/{action}: no such action")

    def _check_lease(self, route: Route, owner: Any) -> None:
        lease = route.lease
        if lease and lease["expires"] > time.time() and lease["owner"] != owner:
            raise _HttpError(409, f"{route.pipeline}: a deploy holds the lease ({lease['owner']})")

    def switch(self, route: Route, target: str, *, expect: Any = "any", owner: Any = None) -> dict[str, Any]:
        """Point ``route`` at ``target``: one assignment. Refused unless the target is ready (and, with
        ``expect``, unless the live slot is still the one the caller saw: compare-and-swap)."""
        self._check_lease(route, owner)
        if target not in SLOTS:
            raise _HttpError(400, f"slot: blue or green, got {target!r}")
        if expect != "any" and expect != route.live:
            raise _HttpError(409, f"{route.pipeline}: the live slot is {route.live}, not {expect}")
        slot = route.slots[target]
        if slot.state != "ready":
            raise _HttpError(409, f"{route.pipeline}/{target} is {slot.state}, not ready: nothing switched")
        previous = route.live
        route.live, route.switched_at = target, time.time()
        slot.retire_at = None
        self._log(f"{route.pipeline}: traffic switched {previous} -> {target} (version {slot.version})")
        self._save()
        return {"pipeline": route.pipeline, "previous": previous, "live": target, "version": slot.version,
                "at": route.switched_at}


# -- HTTP/1.1 framing ------------------------------------------------------------------------------
async def _read_request(reader: asyncio.StreamReader
                        ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise _HttpError(431, f"request head larger than {MAX_HEAD} bytes") from None
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ", 2)
        headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in lines[1:] if line)]
    except ValueError:
        raise _HttpError(400, "malformed request head") from None
    fields = dict(headers)
    connection = fields.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = await _read_chunked(reader, dechunk=True)
    else:
        length = int(fields.get(b"content-length", b"0") or 0)
        if length > MAX_BODY:
            raise _HttpError(413, f"body larger than {MAX_BODY} bytes")
        body = await reader.readexactly(length) if length else b""
    return method, target, headers, body, keep_alive


async def _read_chunked(reader: asyncio.StreamReader, *, dechunk: bool) -> bytes:
    """A chunked body: its data (``dechunk``) or its exact bytes, trailers included (to relay)."""
    parts = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        total += size
        if total > MAX_BODY:
            raise _HttpError(413, f"body larger than {MAX_BODY} bytes")
        if size == 0:
            trailer = b""
            while True:
                t = await reader.readuntil(b"\r\n")
                trailer += t
                if t == b"\r\n":
                    break
            if not dechunk:
                parts.append(line + trailer)
            return b"".join(parts)
        data = await reader.readexactly(size + 2)
        parts.append(data[:-2] if dechunk else line + data)


async def _read_response(reader: asyncio.StreamReader, head: bytes, head_only: bool) -> tuple[int, bytes, bool]:
    """The slot's response as bytes to relay as is; whether its connection can carry another request."""
    first, _, rest = head.partition(b"\r\n")
    status = int(first.split(b" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, v in
              (line.split(b":", 1) for line in rest[:-4].split(b"\r\n") if b":" in line)}
    reusable = b"close" not in fields.get(b"connection", b"").lower()
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, head, reusable
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return status, head + await _read_chunked(reader, dechunk=False), reusable
    if b"content-length" in fields:
        return status, head + await reader.readexactly(int(fields[b"content-length"])), reusable
    body = await reader.read()  # delimited by the end of the connection
    head = head[:-2] + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    return status, head + body, False


async def _respond(writer: asyncio.StreamWriter, status: int, payload: Any, *, close: bool) -> None:
    """``payload`` as JSON, or bytes as the Prometheus text format."""
    if isinstance(payload, bytes):
        body, kind = payload, b"text/plain; version=0.0.4; charset=utf-8"
    else:
        body, kind = json.dumps(payload, default=str).encode(), b"application/json"
    writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
                 % (status, _REASONS.get(status, "Status").encode(), kind, len(body),
                    b"connection: close\r\n" if close else b"") + body)
    await writer.drain()


async def _get_status(port: int | None, path: str) -> int | None:
    if port is None:
        return None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        return int(line.split(b" ", 2)[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return None
    finally:
        writer.close()


def _tail(log: Path, lines: int = 6) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill_stale(pid: int | None) -> None:
    """A slot process left behind by a switch that was killed: ours if it runs ``serve slot``."""
    if not pid:
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        if "serve" in proc.cmdline() and "slot" in proc.cmdline():
            proc.terminate()
            proc.wait(15)
    except (psutil.Error, OSError):
        pass


def _champions(settings: Settings, names: list[str], load_spec: Any) -> dict[str, str]:
    """Each pipeline's champion version, for the first start."""
    from ctloop.registry.aliases import client, current_version

    mlflow_client = client(settings)
    found = {}
    for name in names:
        spec = load_spec(name, Path(settings.pipelines_dir))
        version = current_version(mlflow_client, spec.registered_model, "champion")
        if version is not None:
            found[name] = version
    return found


def read_token(settings: Settings) -> str:
    """The serving token: the setting, else the token file (created by ``ctloop stack up``)."""
    from ctloop.serving.auth import load_token

    return load_token(settings)


def serve(settings: Settings, *, port: int | None = None, bootstrap_champions: bool = True) -> None:
    """Run the switch in the foreground until SIGTERM/SIGINT."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock; plain asyncio works, a bit slower
        uvloop = None
    switch = Switch(settings, read_token(settings), port or settings.serving_port,
                    bootstrap_champions=bootstrap_champions)
    if uvloop is not None:
        uvloop.run(switch.run())
    else:
        asyncio.run(switch.run())
