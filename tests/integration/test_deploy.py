"""Blue-green deploy for real: the traffic switch and its slots are `ctloop serve switch` and `ctloop serve slot`
processes, the models come from a real MLflow server, the slots look features up in a real Feast online
store (SQLite), and `ctloop deploy` / `ctloop rollback` run as commands.

The tests share one stack and run in file order, each starting from where the previous one left it:
the stack serves the champion v1 in blue → v2 is deployed under continuous load (no request lost) →
v3 fails its smoke test (never switched to) → v3 again, with an error breach injected after the switch
(rolled back within 5 s) → a rollback by hand to the last known good → the kubernetes backend against a
fake API server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from ctloop.config.spec import load_spec
from ctloop.lake.store import open_lake
from ctloop.stack.service import free_port
from ctloop.stack.supervisor import Stack

from benchmarks.serve_world import OpenLoop, conform, infer_bodies, train_version, write_feature_rows
from tests.conftest import ROOT, make_pipeline, settings_env, settings_for

CTLOOP = Path(sys.executable).parent / "ctloop"
DAYS = 20
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
FAST = {"model.max_epochs": 6, "model.patience": 2, "model.hidden_units": [32, 16], "model.batch_size": 512,
        "evaluation.holdout_days": "4d", "gate.floors": {"pr_auc": 0.2, "roc_auc": 0.75},
        # a short watch; latency limits loose enough for a busy 2-core machine running the whole stack
        "deploy.watch": "6s", "deploy.min_watch_requests": 20, "deploy.max_p99_ms": 5000,
        "deploy.smoke_p99_ms": 2000, "deploy.keep_old": "10m", "deploy.ready_timeout": "5m"}
RATE = 250  # requests/s of the load, above the 200 the issue asks for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, broker: str) -> Iterator[dict[str, Any]]:
    """Three registered versions of one trained model (v1 champion: the tests exercise the switch, not the models,
    so one training serves all three), their entities' features in Feast, the switch serving v1."""
    from ctloop.features.materialize import materialize
    from ctloop.registry.aliases import client, move_alias
    from ctloop.registry.register import register
    from ctloop.serving.auth import ensure_token
    from ctloop.sim.simulator import synthetic_training_frame

    tmp = tmp_path_factory.mktemp("deploy")
    pipelines, _ = make_pipeline(tmp, **{**FAST, "model.registered_name": f"ctloop-deploy-{uuid.uuid4().hex[:8]}"})
    spec = load_spec("fraud", pipelines)
    settings = settings_for(tmp, broker, pipelines, mlflow_tracking_uri=mlflow_server, serving_port=free_port(),
                            serving_fault_injection=True, stack_services="serving")
    lake = open_lake(settings)
    frame = conform(spec, synthetic_training_frame(spec, 10_000, seed=7, start=START, days=DAYS))
    first = train_version(spec, settings, lake, "snap0", frame, START, DAYS)
    run_id = client(settings).get_model_version(spec.registered_model, first).run_id
    versions = [first, *(str(register(spec, settings, run_id)["version"]) for _ in range(2))]
    write_feature_rows(lake, spec, frame)
    materialize(spec, settings, lake, START, START + timedelta(days=DAYS))
    move_alias(settings, spec.registered_model, "champion", versions[0], "first model, promoted by the test")
    stack = Stack(settings, ["serving"])
    stack.up()
    try:
        yield {"spec": spec, "settings": settings, "lake": lake, "versions": versions, "env": settings_env(settings),
               "token": ensure_token(settings), "bodies": infer_bodies(spec, frame, 400), "tmp": tmp,
               "pipelines": pipelines}
    finally:
        stack.down()


def ctloop(world: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CTLOOP), *args], env=env or world["env"], capture_output=True, text=True, timeout=900,
                          check=False)


def status(world: dict[str, Any]) -> dict[str, Any]:
    out = ctloop(world, "serve", "status", "--pipeline", "fraud", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def deploy_in_background(world: dict[str, Any], version: str, env: dict[str, str] | None = None
                         ) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        box["proc"] = ctloop(world, "deploy", "--pipeline", "fraud", "--version", version, env=env)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def load(world: dict[str, Any], rate: float = RATE) -> OpenLoop:
    return OpenLoop("127.0.0.1", world["settings"].serving_port, "/v2/models/fraud/infer", world["bodies"],
                    token=world["token"], rate=rate)


def moves(world: dict[str, Any], alias: str) -> list[dict[str, str]]:
    from ctloop.registry.aliases import history

    return history(world["settings"], world["spec"].registered_model, alias)


def champion(world: dict[str, Any]) -> str | None:
    from ctloop.registry.aliases import client, current_version

    return current_version(client(world["settings"]), world["spec"].registered_model, "champion")


def test_stack_up_serves_the_champion_and_status_says_where(world: dict[str, Any]) -> None:
    v1 = world["versions"][0]
    st = status(world)
    port = world["settings"].serving_port
    assert st["url"] == f"http://127.0.0.1:{port}/v2/models/fraud"
    assert st["live_slot"] == "blue" and st["live_version"] == v1 and st["champion"] == v1
    assert st["slots"]["blue"]["state"] == "live" and st["slots"]["green"]["state"] == "stopped"
    assert st["token_file"] == str(world["settings"].serving_token_file)
    assert world["token"] not in json.dumps(st), "status must never print the token"
    answer = httpx.post(f"{st['url']}/infer", content=world["bodies"][0],
                        headers={"Authorization": f"Bearer {world['token']}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-ctloop-slot"] == "blue" and answer.json()["model_version"] == v1
    refused = httpx.get(f"http://127.0.0.1:{port}/admin/state", timeout=5)
    assert refused.status_code == 401, "the switch's admin API needs the token"


def test_a_switch_under_continuous_load_loses_no_request(world: dict[str, Any]) -> None:
    """v2 goes live while the client sends 250 requests/s from before the switch until after the watch; the
    client counts every answer: none may fail."""
    v1, v2 = world["versions"][:2]
    generator = load(world)
    sender = generator.start_in_thread()
    time.sleep(2)
    thread, box = deploy_in_background(world, v2)
    thread.join(600)
    time.sleep(1)
    generator.stop.set()
    sender.join(60)
    proc = box["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["outcome"] == "promoted", result["reason"]
    samples = sorted(generator.result.samples, key=lambda s: s.scheduled)
    summary = generator.result.summary()
    assert summary["failed"] == 0, [(s.status, s.error) for s in generator.result.failed[:5]]
    assert summary["achieved_rps"] >= 200 and summary["sent"] >= 200 * summary["seconds"] * 0.95, summary
    first_green = next(s for s in samples if s.slot == "green")
    assert samples[0].slot == "blue" and samples[-1].slot == "green"
    assert max(s.scheduled for s in samples if s.slot == "blue") < first_green.done + 1.0, "traffic went back to blue"
    # the rate held across the switch itself: every request scheduled within a second of it was sent and answered
    around = [s for s in samples if abs(s.scheduled - first_green.scheduled) <= 1.0]
    assert len(around) >= 2 * 200 and all(s.status == 200 for s in around)
    assert champion(world) == v2
    assert moves(world, "live")[0]["version"] == v2 and "switched blue -> green" in moves(world, "live")[0]["reason"]
    promoted = moves(world, "champion")[0]
    assert promoted["version"] == v2 and promoted["previous_version"] == v1
    assert promoted["reason"].startswith("held its watch window")
    steps = [s["step"] for s in result["steps"]]
    assert steps == ["started", "loaded", "smoke", "switched", "watched", "promoted"]
    st = status(world)
    assert st["live_slot"] == "green" and st["slots"]["blue"]["state"] == "warm", "the old slot stays warm"
    assert st["last_deploy"]["outcome"] == "promoted"


def test_a_candidate_failing_its_smoke_test_is_never_switched_to(world: dict[str, Any]) -> None:
    """v3 against a latency budget no server meets (smoke_p99_ms 0.001): refused, traffic and champion stay."""
    v2, v3 = world["versions"][1:]
    strict = world["tmp"] / "strict-pipelines"
    strict.mkdir()
    data = yaml.safe_load((world["pipelines"] / "fraud.yaml").read_text())
    data["deploy"]["smoke_p99_ms"] = 0.001
    (strict / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    generator = load(world, rate=50)
    sender = generator.start_in_thread()
    thread, box = deploy_in_background(world, v3, env={**world["env"], "CTLOOP_PIPELINES_DIR": str(strict)})
    thread.join(600)
    generator.stop.set()
    sender.join(60)
    result = json.loads(box["proc"].stdout)
    assert box["proc"].returncode == 0 and result["outcome"] == "refused"
    assert result["reason"].startswith("smoke test failed: p99") and result["switched"] is False
    assert {s.slot for s in generator.result.samples} == {"green"}, "no request reached the candidate"
    assert generator.result.failed == []
    assert champion(world) == v2 and moves(world, "live")[0]["version"] == v2
    st = status(world)
    assert st["live_slot"] == "green" and st["live_version"] == v2
    assert st["slots"]["blue"]["state"] == "stopped", "the refused candidate's slot is stopped"
    assert st["last_deploy"]["outcome"] == "refused"
    from ctloop.registry.aliases import client

    tag = client(world["settings"]).get_model_version(world["spec"].registered_model, v3).tags["ctloop.deploy"]
    assert tag.startswith("refused: smoke test failed")


def test_an_error_breach_after_the_switch_rolls_back_within_5_seconds(world: dict[str, Any]) -> None:
    """Half of v3's answers fail from just after the switch. The issue asks for the rollback "within 5 s of the
    breach", so this test measures that interval (fault injected → traffic back on the old slot), with margin
    already in the 5 s: the watch polls every 0.25 s and needs 20 requests, 0.1 s at this rate."""
    v2, v3 = world["versions"][1:]
    generator = load(world)
    sender = generator.start_in_thread()
    time.sleep(1)
    thread, box = deploy_in_background(world, v3)
    breach_at = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and thread.is_alive():
        if any(s.slot == "blue" for s in generator.result.samples[-50:]):
            state = httpx.get(f"http://127.0.0.1:{world['settings'].serving_port}/admin/state", timeout=5,
                              headers={"Authorization": f"Bearer {world['token']}"}).json()
            blue = state["pipelines"]["fraud"]["slots"]["blue"]["url"]
            answer = httpx.post(f"{blue}/admin/faults", json={"error_rate": 0.5}, timeout=10,
                                headers={"Authorization": f"Bearer {world['token']}"})
            assert answer.status_code == 200, answer.text
            breach_at = time.time()
            break
        time.sleep(0.05)
    thread.join(600)
    time.sleep(1)
    generator.stop.set()
    sender.join(60)
    assert breach_at is not None, "v3 never took traffic"
    result = json.loads(box["proc"].stdout)
    assert box["proc"].returncode == 0 and result["outcome"] == "rolled_back", result["reason"]
    assert "error rate" in result["reason"]
    rolled = next(s for s in result["steps"] if s["step"] == "rolled_back")
    assert rolled["rolled_back_at"] - breach_at < 5.0
    failures = [s for s in generator.result.samples if s.status != 200]
    assert failures and all(s.slot == "blue" for s in failures)
    assert max(s.done for s in failures) - breach_at < 5.0, "errors went on after the rollback"
    late = [s for s in generator.result.samples if s.scheduled > rolled["rolled_back_at"] + 1]
    assert late and {s.slot for s in late} == {"green"}
    assert champion(world) == v2, "the champion never moved"
    live = moves(world, "live")
    assert [m["version"] for m in live[:2]] == [v2, v3]
    assert live[0]["reason"].startswith("rollback: error rate") and live[0]["previous_version"] == v3


def test_rollback_by_hand_goes_back_to_the_last_known_good(world: dict[str, Any]) -> None:
    v1, v2 = world["versions"][:2]
    out = ctloop(world, "rollback", "--pipeline", "fraud", "--reason", "INC-7: complaints about v2")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["outcome"] == "rolled_back" and result["version"] == v1 and result["live_slot"] == "blue"
    assert champion(world) == v1
    back = moves(world, "champion")[0]
    assert back["version"] == v1 and back["reason"] == "rollback: INC-7: complaints about v2"
    st = status(world)
    assert st["live_slot"] == "blue" and st["live_version"] == v1 and st["slots"]["green"]["state"] == "warm"


# --- the kubernetes backend -----------------------------------------------------------------------------------


class FakeKubernetes:
    """The few Kubernetes API endpoints the deploy step uses, on 127.0.0.1, serving the base manifests.

    No cluster can run here, so the API is emulated: the Service and the two Deployments of
    k8s/base/serving, a rollout that completes on the second status read after a patch, and the slots'
    pods, which point at the real slot processes of this test's switch (their /metrics is what the watch
    reads). Every request is recorded: method, path, query, content type and body.
    """

    def __init__(self, slot_ports: dict[str, int], versions: dict[str, str]) -> None:
        docs = {(d["kind"], d["metadata"]["name"]): d for path in (ROOT / "k8s" / "base" / "serving").glob("*.yaml")
                for d in yaml.safe_load_all(path.read_text()) if d}
        self.service = docs["Service", "ctloop-serving"]
        self.service["metadata"]["resourceVersion"] = "100"
        self.deployments = {}
        for slot in ("blue", "green"):
            d = docs["Deployment", f"ctloop-serving-{slot}"]
            d["metadata"].update(generation=1, resourceVersion="10")
            d["spec"]["replicas"] = 2
            args = d["spec"]["template"]["spec"]["containers"][0]["args"]
            d["spec"]["template"]["spec"]["containers"][0]["args"] = [
                *[a for a in args if a not in ("--alias", "champion")], "--version", versions[slot]]
            d["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                           "availableReplicas": 2}
            self.deployments[slot] = d
        self.slot_ports = slot_ports
        self.calls: list[dict[str, Any]] = []
        self._reads_since_patch: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                fake.handle(self, "GET")

            def do_PATCH(self) -> None:  # noqa: N802
                fake.handle(self, "PATCH")

        return Handler

    def handle(self, request: Any, method: str) -> None:
        url = urlsplit(request.path)
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0)) if method == "PATCH" else b""
        call = {"method": method, "path": url.path, "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                "content_type": request.headers.get("Content-Type"), "body": json.loads(body) if body else None}
        self.calls.append(call)
        ns = "/namespaces/ctloop"
        if url.path == f"/api/v1{ns}/services/ctloop-serving":
            if method == "PATCH":
                patch = call["body"]
                if patch["metadata"].get("resourceVersion") != self.service["metadata"]["resourceVersion"]:
                    return request._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                self.service["spec"]["selector"].update(patch["spec"]["selector"])
                self.service["metadata"]["annotations"].update(patch["metadata"]["annotations"])
                self.service["metadata"]["resourceVersion"] = str(int(self.service["metadata"]["resourceVersion"]) + 1)
            return request._answer(200, self.service)
        for slot, d in self.deployments.items():
            name = f"/apis/apps/v1{ns}/deployments/ctloop-serving-{slot}"
            if url.path == name and method == "GET":
                return request._answer(200, d)
            if url.path == name and method == "PATCH":
                patch = call["body"]
                container = patch["spec"]["template"]["spec"]["containers"][0]
                d["spec"]["template"]["spec"]["containers"][0]["args"] = container["args"]
                d["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
                d["spec"]["template"]["metadata"].setdefault("annotations", {}).update(
                    patch["spec"]["template"]["metadata"]["annotations"])
                d["metadata"]["generation"] += 1
                d["status"].update(updatedReplicas=0)
                self._reads_since_patch[slot] = 0
                return request._answer(200, d)
            if url.path == f"{name}/status" and method == "GET":
                reads = self._reads_since_patch[slot] = self._reads_since_patch.get(slot, 0) + 1
                if reads >= 2:
                    d["status"].update(observedGeneration=d["metadata"]["generation"], updatedReplicas=2)
                return request._answer(200, d)
        if url.path == f"/api/v1{ns}/pods" and method == "GET":
            selector = dict(s.split("=") for s in call["query"]["labelSelector"].split(","))
            slot = selector["ctloop.io/slot"]
            pods = [{"metadata": {"name": f"ctloop-serving-{slot}-{i}", "labels": selector},
                     "spec": {"containers": [{"name": "serving",
                                              "ports": [{"name": "http", "containerPort": self.slot_ports[slot]}]}]},
                     "status": {"phase": "Running", "podIP": "127.0.0.1"}} for i in range(1)]
            return request._answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
        return request._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})


def test_the_kubernetes_backend_issues_exactly_the_expected_api_calls(world: dict[str, Any]) -> None:
    """`ctloop deploy` on the kubernetes backend against FakeKubernetes (no cluster can run here): the deploy
    reads the Service and both Deployments, patches the idle one's --version, reads its status until the rollout
    is complete, smoke-tests it (the real green slot), moves the Service's selector under a resourceVersion
    precondition, and lists the new slot's pods to read their metrics. Nothing else: every call is one the
    ctloop-deployer Role allows, and the Role allows nothing the deploy does not call."""
    from ctloop.deploy.deploy import deploy
    from ctloop.deploy.kube import KubernetesBackend
    from kubernetes.client import ApiClient, Configuration

    v1, v2 = world["versions"][:2]
    admin = httpx.Client(base_url=f"http://127.0.0.1:{world['settings'].serving_port}/admin", timeout=30,
                         headers={"Authorization": f"Bearer {world['token']}"})
    route = admin.get("/state").json()["pipelines"]["fraud"]
    for slot, version in (("blue", v1), ("green", v2)):  # the local slots stand in for the pods
        if route["slots"][slot]["version"] != version or route["slots"][slot]["state"] not in ("live", "warm"):
            assert route["live"] != slot
            admin.put(f"/pipelines/fraud/slots/{slot}", json={"version": version}).raise_for_status()
    deadline = time.monotonic() + 300
    while any(s["state"] not in ("live", "warm") for s in route["slots"].values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        route = admin.get("/state").json()["pipelines"]["fraud"]
    slots = route["slots"]
    assert {s: slots[s]["version"] for s in slots} == {"blue": v1, "green": v2}
    ports = {s: int(slots[s]["url"].rsplit(":", 1)[1]) for s in ("blue", "green")}
    fake = FakeKubernetes(ports, {"blue": v1, "green": v1})
    config = Configuration(host=fake.url)
    backend = KubernetesBackend(world["settings"], "fraud", world["token"], api=ApiClient(config),
                                slot_url={s: slots[s]["url"] for s in ports}, poll_s=0.2)
    result = deploy(world["spec"], world["settings"], world["lake"], v2, backend=backend)
    assert result["outcome"] == "promoted", result["reason"]
    assert fake.service["spec"]["selector"]["ctloop.io/slot"] == "green"

    ns, apps = "/api/v1/namespaces/ctloop", "/apis/apps/v1/namespaces/ctloop"
    calls = [(c["method"], c["path"]) for c in fake.calls]
    status_reads = calls.count(("GET", f"{apps}/deployments/ctloop-serving-green/status"))
    pod_lists = calls.count(("GET", f"{ns}/pods"))
    assert status_reads == 2 and pod_lists >= 3
    expected = [("GET", f"{ns}/services/ctloop-serving"),
                ("GET", f"{apps}/deployments/ctloop-serving-blue"),
                ("GET", f"{apps}/deployments/ctloop-serving-green"),
                ("PATCH", f"{apps}/deployments/ctloop-serving-green"),
                *[("GET", f"{apps}/deployments/ctloop-serving-green/status")] * status_reads,
                ("GET", f"{ns}/pods"),  # the watch's baseline, just before the switch
                ("PATCH", f"{ns}/services/ctloop-serving"),
                *[("GET", f"{ns}/pods")] * (pod_lists - 1)]
    assert calls == expected
    patch = next(c for c in fake.calls if c["method"] == "PATCH" and "deployments" in c["path"])
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    container = patch["body"]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "serving" and container["args"][-2:] == ["--version", v2]
    assert "--alias" not in container["args"] and container["args"].count("--version") == 1
    switch = next(c for c in fake.calls if c["method"] == "PATCH" and "services" in c["path"])
    assert switch["content_type"] == "application/merge-patch+json"
    assert switch["body"]["spec"]["selector"]["ctloop.io/slot"] == "green"
    assert switch["body"]["metadata"]["resourceVersion"] == "100", "the switch is a compare-and-swap"
    assert all(c["query"].get("labelSelector") == "app.kubernetes.io/name=ctloop-serving,ctloop.io/slot=green"
               for c in fake.calls if c["path"] == f"{ns}/pods")

    # every call is allowed to ctloop-deployer, and the Role allows nothing more
    role = next(d for d in yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac" / "deployer.yaml").read_text())
                if d["kind"] == "Role")
    used = set()
    for c in fake.calls:
        parts = c["path"].split("/")
        group = "apps" if parts[1] == "apis" else ""
        rest = parts[parts.index("namespaces") + 2:]
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        verb = {"PATCH": "patch", "GET": "get" if len(rest) > 1 else "list"}[c["method"]]
        used.add((group, resource, verb, rest[1] if len(rest) > 1 else None))
    allowed = {(g, r, v, n) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"] for n in rule.get("resourceNames", [None])}
    for group, resource, verb, name in used:
        assert (group, resource, verb, name) in allowed or (group, resource, verb, None) in allowed, \
            (group, resource, verb, name)
    assert {(g, r, v) for g, r, v, _ in allowed} == {(g, r, v) for g, r, v, _ in used}, "the Role allows more"
