"""The ``kubernetes`` runtime's deploy backend: the slot Deployments and the live Service, through the API.

``k8s/base/serving/``: Deployments ``ctloop-serving-blue`` and ``-green`` run ``ctloop serve slot``
with the model version in their arguments (``--version N``, or ``--alias champion`` as installed);
the Service ``ctloop-serving`` selects the live slot by the label ``ctloop.io/slot``; the Services
``ctloop-serving-blue``/``-green`` always reach one slot each (the smoke test goes there). The deploy
pod runs as ``ctloop-deployer`` (``k8s/base/rbac/deployer.yaml``), which may do exactly what this
module does, and nothing more:

==========================================  =========================  ==============================
call                                        API request                why
==========================================  =========================  ==============================
``read_namespaced_service``                 GET services               the live slot (its selector)
``read_namespaced_deployment`` (x2)         GET deployments            each slot's version and health
``patch_namespaced_deployment``             PATCH deployments          the idle slot's ``--version``
``read_namespaced_deployment_status``       GET deployments/status     its rollout, until complete
``patch_namespaced_service``                PATCH services             the switch (and a rollback)
``list_namespaced_pod``                     LIST pods                  the watch scrapes their /metrics
==========================================  =========================  ==============================

The switch patches the selector with the Service's ``resourceVersion`` as a precondition, so a
second deploy racing this one gets a 409 instead of silently switching twice. kube-proxy then sends
new connections to the new slot's pods; the old slot's pods keep running (warm, their HPA keeps its
minimum), so requests in flight finish there and a rollback is one more selector patch. The old
slot stays warm until the next deploy loads a version into it (``deploy.keep_old`` is a minimum).
"""

from __future__ import annotations

import math
import time
from typing import Any

from ctloop.config.settings import Settings
from ctloop.deploy.local import BackendError

VERSION_ANNOTATION = "ctloop.io/model-version"
SLOT_LABEL = "ctloop.io/slot"
APP_LABEL = "app.kubernetes.io/name"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def api_client() -> Any:
    """In a pod: its service account; elsewhere: the kubeconfig's current context."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def with_version(args: list[str], version: str) -> list[str]:
    """The slot's arguments serving ``version``: ``--version``/``--alias`` (and their values) replaced."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--version", "--alias"):
            skip = True
            continue
        if arg.startswith(("--version=", "--alias=")):
            continue
        out.append(arg)
    return [*out, "--version", str(version)]


def version_of(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--version" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--version="):
            return arg.split("=", 1)[1]
        if arg == "--alias" and i + 1 < len(args):
            return f"@{args[i + 1]}"
    return None


class KubernetesBackend:
    runtime = "kubernetes"

    def __init__(self, settings: Settings, pipeline: str, token: str, *, api: Any = None, service: str = "",
                 slot_url: str | dict[str, str] = "http://{service}-{slot}.{namespace}.svc",
                 metrics_port: int | None = None, poll_s: float = 2.0) -> None:
        """``slot_url``: where a slot's own Service answers, a template or a URL per slot (tests)."""
        import os

        from kubernetes import client

        api = api or api_client()
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.pipeline, self.token, self.namespace = pipeline, token, settings.k8s_namespace
        self.service = service or os.environ.get("CTLOOP_SERVING_SERVICE", "ctloop-serving")
        self.slot_url_template, self.metrics_port, self.poll_s = slot_url, metrics_port, poll_s
        self._service_version: str | None = None
        self._deployments: dict[str, Any] = {}
        self._generation: dict[str, int] = {}
        self._previous_args: dict[str, list[str]] = {}
        self._snapshots: dict[str, list[tuple[float, dict[str, dict[str, Any]]]]] = {}

    def _name(self, slot: str) -> str:
        return f"{self.service}-{slot}"

    def live_url(self) -> str:
        return f"http://{self.service}.{self.namespace}.svc/v2/models/{self.pipeline}"

    def state(self) -> dict[str, Any]:
        svc = self.core.read_namespaced_service(self.service, self.namespace)
        self._service_version = svc.metadata.resource_version
        live = (svc.spec.selector or {}).get(SLOT_LABEL)
        slots = {}
        for slot in ("blue", "green"):
            d = self.apps.read_namespaced_deployment(self._name(slot), self.namespace)
            self._deployments[slot] = d
            container = d.spec.template.spec.containers[0]
            version = version_of(list(container.args or []))
            status = d.status
            want = d.spec.replicas if d.spec.replicas is not None else 1
            ready = (status is not None and (status.ready_replicas or 0) >= want > 0
                     and (status.updated_replicas or 0) >= want)
            slots[slot] = {"version": version, "url": self.slot_url(slot), "reason": "",
                           "state": ("live" if slot == live else "warm") if ready else "starting",
                           "replicas": want, "ready_replicas": (status.ready_replicas or 0) if status else 0}
        return {"live": live, "switched_at": None, "slots": slots}

    def acquire(self, owner: str, ttl_s: float) -> None:
        """Nothing to take: Airflow runs one train run (so one deploy) per pipeline at a time, and the
        switch's resourceVersion precondition refuses a racing second switch."""

    def release(self) -> None:
        pass

    def load(self, slot: str, version: str) -> None:
        d = self._deployments.get(slot) or self.apps.read_namespaced_deployment(self._name(slot), self.namespace)
        container = d.spec.template.spec.containers[0]
        self._previous_args[slot] = list(container.args or [])
        self._patch_slot(slot, with_version(self._previous_args[slot], version), str(version))

    def _patch_slot(self, slot: str, args: list[str], version: str) -> None:
        d = self._deployments.get(slot)
        container = d.spec.template.spec.containers[0].name if d is not None else "serving"
        annotations = {VERSION_ANNOTATION: version}
        body = {"metadata": {"annotations": annotations},
                "spec": {"template": {"metadata": {"annotations": annotations},
                                      "spec": {"containers": [{"name": container, "args": args}]}}}}
        patched = self.apps.patch_namespaced_deployment(self._name(slot), self.namespace, body, _content_type=SMP)
        self._generation[slot] = patched.metadata.generation

    def wait_ready(self, slot: str, timeout_s: float) -> None:
        """Until the Deployment's rollout is complete: observed, every replica updated, ready and available."""
        deadline = time.monotonic() + timeout_s
        name = self._name(slot)
        while True:
            d = self.apps.read_namespaced_deployment_status(name, self.namespace)
            st, want = d.status, d.spec.replicas if d.spec.replicas is not None else 1
            generation = self._generation.get(slot, d.metadata.generation)
            for cond in (st.conditions or []) if st else []:
                if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                    raise BackendError(f"{name}: rollout failed ({cond.message})")
            if (st is not None and (st.observed_generation or 0) >= generation
                    and (st.updated_replicas or 0) == want and (st.ready_replicas or 0) == want
                    and (st.available_replicas or 0) == want and not st.unavailable_replicas):
                return
            if time.monotonic() >= deadline:
                raise BackendError(f"{name}: rollout not complete within {timeout_s:.0f}s "
                                   f"({(st.ready_replicas or 0) if st else 0}/{want} ready)")
            time.sleep(self.poll_s)

    def slot_url(self, slot: str) -> str:
        if isinstance(self.slot_url_template, dict):
            return self.slot_url_template[slot]
        return self.slot_url_template.format(service=self.service, slot=slot, namespace=self.namespace)

    def switch(self, to: str, expect: str | None) -> dict[str, Any]:
        """Move the live Service's selector to ``to``, only if nobody changed the Service since ``state()``."""
        from kubernetes.client.exceptions import ApiException

        self._snapshots[to] = [(time.time(), self._scrape(to))]  # the baseline of the watch
        body = {"metadata": {"resourceVersion": self._service_version, "annotations": {"ctloop.io/live-slot": to}},
                "spec": {"selector": {APP_LABEL: self.service, SLOT_LABEL: to}}}
        try:
            svc = self.core.patch_namespaced_service(self.service, self.namespace, body, _content_type=MERGE)
        except ApiException as exc:
            if exc.status == 409:
                raise BackendError(f"{self.service} changed since it was read (another deploy?): nothing switched "
                                   f"(expected live slot {expect})") from None
            raise
        self._service_version = svc.metadata.resource_version
        return {"previous": expect, "live": to, "at": time.time()}

    def stats(self, slot: str, since: float, until: float | None = None) -> dict[str, Any]:
        """The slot's infer requests, errors (5xx) and p99 since ``since``, from its pods' Prometheus counters."""
        now = time.time()
        current = self._scrape(slot)
        history = self._snapshots.setdefault(slot, [])
        history.append((now, current))
        del history[:-600]
        earlier = [snap for at, snap in history if at <= since]
        base = earlier[-1] if earlier else history[0][1]
        requests = errors = 0
        buckets: dict[float, float] = {}
        for pod, counts in current.items():
            before = base.get(pod, {})
            if counts["requests"] < before.get("requests", 0):  # the pod restarted: its counters began again
                before = {}
            requests += counts["requests"] - before.get("requests", 0)
            errors += counts["errors"] - before.get("errors", 0)
            for le, n in counts["buckets"].items():
                buckets[le] = buckets.get(le, 0) + n - before.get("buckets", {}).get(le, 0)
        p99 = None
        if requests:
            rank = 0.99 * sum(n for le, n in buckets.items() if math.isinf(le))
            p99 = next((le * 1000 for le in sorted(buckets) if buckets[le] >= rank), None)
        return {"slot": slot, "requests": int(requests), "errors": int(errors),
                "error_rate": round(errors / requests, 6) if requests else None,
                "p99_ms": p99, "pods": len(current), "now": now}

    def _scrape(self, slot: str) -> dict[str, dict[str, Any]]:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        pods = self.core.list_namespaced_pod(self.namespace,
                                             label_selector=f"{APP_LABEL}={self.service},{SLOT_LABEL}={slot}")
        out = {}
        for pod in pods.items:
            if not pod.status or not pod.status.pod_ip or pod.status.phase != "Running":
                continue
            port = self.metrics_port or next(
                (p.container_port for c in pod.spec.containers for p in (c.ports or []) if p.name == "http"), 8080)
            try:
                text = httpx.get(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=5,
                                 headers={"Authorization": f"Bearer {self.token}"}).text
            except httpx.HTTPError:
                continue
            counts: dict[str, Any] = {"requests": 0.0, "errors": 0.0, "buckets": {}}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("route") != "infer":
                        continue
                    if sample.name == "ctloop_serving_requests_total":
                        counts["requests"] += sample.value
                        if int(sample.labels.get("status", "0")) >= 500:
                            counts["errors"] += sample.value
                    elif sample.name == "ctloop_serving_request_seconds_bucket":
                        le = float(sample.labels["le"])
                        counts["buckets"][le] = counts["buckets"].get(le, 0) + sample.value
            out[pod.metadata.name] = counts
        return out

    def retire(self, slot: str, after_s: float) -> None:
        """The old slot stays warm until the next deploy loads a version into it (its HPA keeps its minimum)."""

    def stop(self, slot: str) -> None:
        """A refused candidate's slot goes back to what it served before (warm again, ready for a rollback)."""
        if slot in self._previous_args:
            args = self._previous_args.pop(slot)
            self._patch_slot(slot, args, version_of(args) or "")

    def close(self) -> None:
        pass
