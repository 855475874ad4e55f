"""The deploy's parts without servers: the switch's routing and admin API against stand-in upstreams (asyncio
servers in this process), the rolling counts, the watch's verdicts on scripted figures, the slot arguments
the kubernetes backend writes, and the note line. The real slots, MLflow and Feast: tests/integration/test_deploy.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ctloop.config.settings import load_settings
from ctloop.config.spec import DeploySpec
from ctloop.deploy.deploy import watch
from ctloop.deploy.kube import version_of, with_version
from ctloop.deploy.stats import RollingStats
from ctloop.deploy.switch import Switch
from ctloop.orchestration.notes import deploy_line

TOKEN = "t0ken-for-tests"


# --- the switch -------------------------------------------------------------------------------------------------


async def _upstream(name: str, gate: asyncio.Event | None = None, status: int = 200) -> asyncio.AbstractServer:
    """A stand-in slot: answers every request with its name (after ``gate`` opens, when given)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                if gate is not None:
                    await gate.wait()
                body = json.dumps({"slot": name}).encode()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _request(port: int, method: str, path: str, body: Any = None, token: str | None = TOKEN
                   ) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {len(data)}\r\n"
                 f"connection: close\r\n\r\n".encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(payload) if payload else None


async def _switch_with(tmp_path: Path, upstreams: dict[str, asyncio.AbstractServer]) -> tuple[Switch, int]:
    switch = Switch(load_settings(state_dir=tmp_path), TOKEN, 0, bootstrap_champions=False)
    switch.dir.mkdir(parents=True)
    route = switch.route("fraud")
    for name, server in upstreams.items():
        slot = route.slots[name]
        slot.port, slot.version, slot.state = server.sockets[0].getsockname()[1], name[0], "ready"
        slot.process = object()  # type: ignore[assignment]  # "running": its pooled connections are kept
    route.live = "blue"
    server = await asyncio.start_server(switch._client, "127.0.0.1", 0)
    switch._server = server
    return switch, server.sockets[0].getsockname()[1]


def test_requests_follow_the_pointer_and_in_flight_ones_finish_where_they_went(tmp_path: Path) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        blue, green = await _upstream("blue", gate), await _upstream("green")
        switch, port = await _switch_with(tmp_path, {"blue": blue, "green": green})
        slow = asyncio.ensure_future(_request(port, "POST", "/v2/models/fraud/infer", {"x": 1}))
        await asyncio.sleep(0.2)  # forwarded to blue, which holds its answer
        status, _, moved = await _request(port, "POST", "/admin/pipelines/fraud/switch",
                                          {"slot": "green", "expect": "blue"})
        assert status == 200 and moved["previous"] == "blue" and moved["live"] == "green"
        status, headers, body = await _request(port, "POST", "/v2/models/fraud/infer", {"x": 2})
        assert status == 200 and body == {"slot": "green"} and headers["x-ctloop-slot"] == "green"
        gate.set()
        status, headers, body = await slow
        assert status == 200 and body == {"slot": "blue"}, "the in-flight request finished on the old slot"
        # compare-and-swap: a caller that saw blue live cannot switch again
        status, _, refused = await _request(port, "POST", "/admin/pipelines/fraud/switch",
                                            {"slot": "blue", "expect": "blue"})
        assert status == 409 and "live slot is green" in refused["error"]
        stats = (await _request(port, "GET", "/admin/pipelines/fraud/stats?slot=blue&since=0"))[2]
        assert stats["requests"] == 1 and stats["errors"] == 0
        saved = json.loads((tmp_path / "serving" / "switch.json").read_text())
        assert saved["pipelines"]["fraud"]["live"] == "green", "the pointer survives a restart of the switch"
        for server in (blue, green, switch._server):
            server.close()

    asyncio.run(scenario())


def test_admin_needs_the_token_and_a_slot_must_be_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        blue, green = await _upstream("blue"), await _upstream("green", status=500)
        switch, port = await _switch_with(tmp_path, {"blue": blue, "green": green})
        assert (await _request(port, "GET", "/admin/state", token=None))[0] == 401
        assert (await _request(port, "GET", "/admin/state", token="wrong"))[0] == 401
        switch.routes["fraud"].slots["green"].state = "starting"
        status, _, body = await _request(port, "POST", "/admin/pipelines/fraud/switch", {"slot": "green"})
        assert status == 409 and "not ready" in body["error"]
        assert (await _request(port, "GET", "/v2/health/ready", token=None))[0] == 200
        assert (await _request(port, "GET", "/v2/models/other/infer", token=None))[0] == 503
        # a 5xx of the slot is relayed and counted as an error of that slot
        switch.routes["fraud"].slots["green"].state = "ready"
        await _request(port, "POST", "/admin/pipelines/fraud/switch", {"slot": "green"})
        assert (await _request(port, "POST", "/v2/models/fraud/infer", {}))[0] == 500
        stats = (await _request(port, "GET", "/admin/pipelines/fraud/stats?slot=green&since=0"))[2]
        assert stats["requests"] == 1 and stats["errors"] == 1 and stats["error_rate"] == 1.0
        for server in (blue, green, switch._server):
            server.close()

    asyncio.run(scenario())


# --- rolling counts ---------------------------------------------------------------------------------------------


def test_rolling_stats_count_and_bound_percentiles_within_a_bin() -> None:
    stats = RollingStats(clock=lambda: 1000.0)
    for i in range(1, 101):
        stats.record(i / 1000, error=i > 98, at=1000.0 + i / 100)  # 1..100 ms over ~1 s
    summary = stats.summary(since=1000)
    assert summary["requests"] == 100 and summary["errors"] == 2 and summary["error_rate"] == 0.02
    assert 99 <= summary["p99_ms"] <= 99 * 1.05 and 50 <= summary["p50_ms"] <= 50 * 1.05
    assert summary["max_ms"] == 100.0
    assert stats.summary(since=1002)["requests"] == 0 and stats.summary(since=1002)["p99_ms"] is None


# --- the watch --------------------------------------------------------------------------------------------------


class ScriptedBackend:
    """Stats from a script: ``figures(now, since)`` -> (requests, errors, p99_ms)."""

    def __init__(self, figures: Any, clock: list[float]) -> None:
        self.figures, self.clock = figures, clock

    def stats(self, slot: str, since: float, until: float | None = None) -> dict[str, Any]:
        n, errors, p99 = self.figures(self.clock[0], since)
        return {"requests": n, "errors": errors, "error_rate": errors / n if n else None, "p99_ms": p99}


def _watch(figures: Any, **deploy: Any) -> dict[str, Any]:
    clock = [100.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    spec = DeploySpec(watch="10s", min_watch_requests=20, max_error_rate=0.01, max_p99_ms=250, **deploy)
    return watch(ScriptedBackend(figures, clock), "green", spec, 100.0, poll_s=0.5, sleep=sleep,
                 clock=lambda: clock[0])


def test_the_watch_holds_on_good_figures() -> None:
    verdict = _watch(lambda now, since: (int((now - since) * 100), 0, 12.0))
    assert verdict["held"] and verdict["at"] >= 110 and "error rate 0.0000 <= 0.01" in verdict["reason"]


def test_the_watch_breaks_at_the_first_poll_past_a_limit() -> None:
    errors = _watch(lambda now, since: (1000, 50 if now >= 103 else 0, 12.0))
    assert not errors["held"] and errors["at"] == 103.0 and errors["reason"].startswith("error rate 0.0500")
    slow = _watch(lambda now, since: (1000, 0, 900.0 if now >= 105 else 20.0))
    assert not slow["held"] and slow["at"] == 105.0 and slow["reason"].startswith("p99 900.0 ms > max_p99_ms 250")


def test_too_little_traffic_extends_the_window_once_then_holds_without_a_verdict() -> None:
    verdict = _watch(lambda now, since: (3, 1, 12.0))  # 33 % errors, but 3 requests judge nothing
    assert verdict["held"] and verdict["extended"] and verdict["at"] >= 120
    assert "no verdict" in verdict["reason"]


# --- the kubernetes slot arguments, the note ------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["serve", "slot", "--pipeline", "fraud", "--slot", "blue", "--alias", "champion"],
    ["serve", "slot", "--pipeline", "fraud", "--slot", "blue", "--version", "3"],
    ["serve", "slot", "--version=3", "--pipeline", "fraud", "--slot", "blue"],
])
def test_the_idle_slot_gets_exactly_one_version_argument(args: list[str]) -> None:
    new = with_version(args, "7")
    assert new[:1] == ["serve"] and new[-2:] == ["--version", "7"] and version_of(new) == "7"
    assert "--alias" not in new and sum(a.startswith("--version") for a in new) == 1
    assert [a for a in new if a not in ("--version", "7")] == [a for a in args if not a.startswith(
        ("--version", "--alias")) and a not in ("3", "champion")]


def test_the_note_says_what_was_switched_or_why_not() -> None:
    promoted = {"outcome": "promoted", "version": "4", "live_slot": "green", "previous": {"slot": "blue",
                "version": "3"}, "reason": "held its watch window: 1200 requests in 60s, error rate 0.0000"}
    assert deploy_line(promoted) == ("deployed v4: traffic switched to green (from blue v3); champion after the "
                                     "watch: 1200 requests in 60s, error rate 0.0000")
    refused = {"outcome": "refused", "version": "4", "champion": "3", "reason": "smoke test failed: p99 300 ms"}
    assert deploy_line(refused) == ("deploy of v4 refused, nothing switched, champion stays v3: smoke test "
                                    "failed: p99 300 ms")
    back = {"outcome": "rolled_back", "version": "4", "live_slot": "blue", "champion": "3",
            "reason": "rollback: error rate 0.5000 > max_error_rate 0.01"}
    assert deploy_line(back) == ("deploy of v4 rolled back to blue, champion stays v3: error rate 0.5000 > "
                                 "max_error_rate 0.01")
    assert deploy_line(None) == "deploy: no result"


def test_a_restarted_switch_restores_its_slots_pointer_and_retirements(tmp_path: Path) -> None:
    async def scenario() -> None:
        switch = Switch(load_settings(state_dir=tmp_path, pipelines_dir=tmp_path), TOKEN, 0)
        (tmp_path / "serving").mkdir()
        (tmp_path / "serving" / "switch.json").write_text(json.dumps({"pipelines": {"fraud": {
            "live": "green", "switched_at": 5.0, "slots": {"blue": {"version": "3", "port": 1, "retire_at": 99.0},
                                                           "green": {"version": "4", "port": 2}}}}}))
        loaded = []

        async def load(pipeline: str, name: str, version: str, *, port: int | None = None) -> Any:
            loaded.append((pipeline, name, version, port))
            slot = switch.route(pipeline).slots[name]
            slot.version, slot.port, slot.state, slot.retire_at = version, port, "starting", None
            return slot

        switch.load = load  # type: ignore[method-assign]  # no slot processes here
        await switch._restore()
        route = switch.routes["fraud"]
        assert loaded == [("fraud", "blue", "3", 1), ("fraud", "green", "4", 2)]
        assert route.live == "green" and route.switched_at == 5.0 and route.slots["blue"].retire_at == 99.0

    asyncio.run(scenario())


def test_the_local_metrics_endpoint_serves_the_newest_monitoring_figures(tmp_path: Path) -> None:
    """Locally the monitor's figures have no Pushgateway: the stack's serving port answers `GET /metrics` with
    each pipeline's newest judged interval (a re-run of an older one does not replace it)."""
    from datetime import UTC, datetime

    from ctloop.config.spec import load_spec
    from ctloop.lake.store import open_lake
    from ctloop.monitoring.checks import Check
    from ctloop.monitoring.monitor import publish_metrics

    settings = load_settings(state_dir=tmp_path)
    spec, lake = load_spec("fraud", settings.pipelines_dir), open_lake(settings)
    drifted = Check("drift_features", False, "1 of 1 inputs drifted", {"share": 1.0, "columns": [
        {"column": "amount", "measure": "wasserstein", "effect": 0.7}]})
    newer, older = datetime(2026, 1, 2, 6, tzinfo=UTC), datetime(2026, 1, 2, 5, tzinfo=UTC)
    publish_metrics(spec, settings, lake, "_monitoring/fraud/intervals/a", [drifted], newer)
    publish_metrics(spec, settings, lake, "_monitoring/fraud/intervals/b", [], older)

    async def scenario() -> tuple[int, dict[str, str], bytes]:
        switch, port = await _switch_with(tmp_path, {})
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        raw = await reader.read()
        writer.close()
        switch._server.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        return int(lines[0].split()[1]), dict(line.lower().split(": ", 1) for line in lines[1:]), body

    status, headers, body = asyncio.run(scenario())
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'ctloop_monitor_check_passed{check="drift_features",pipeline="fraud"} 0.0' in text
    assert 'ctloop_drift_effect_size{column="amount",measure="wasserstein",pipeline="fraud"} 0.7' in text
    [end] = [line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line.startswith('ctloop_monitor_interval_end_timestamp_seconds{pipeline="fraud"}')]
    assert float(end) == newer.timestamp(), "the re-run of the older interval left the newest figures"
