"""The Kustomize overlays render, every object validates against the pinned Kubernetes schema,
and the objects say what the loop needs: hardened pods, blue-green serving, a GPU training
template, namespaced least-privilege RBAC, default-deny networking, metrics and a dashboard."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra_helpers import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    TERRAFORM,
    load_tf,
    parse_objects,
    render,
)

NAMESPACE = {"dev": "ctloop-dev", "prod": "ctloop"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
}
WORKLOADS = {
    "ctloop-serving-blue",
    "ctloop-serving-green",
    "ctloop-lander",
    "ctloop-feast",
    "ctloop-mlflow",
    "ctloop-pushgateway",
}
POD_TEMPLATES = {"ctloop-job", "ctloop-training", "ctloop-deploy"}
# Metric names the dashboard and scrape config rely on; the ctloop services must expose them.
METRIC_CONTRACT = {
    "ctloop_lander_consumer_lag",
    "ctloop_lander_last_landed_timestamp_seconds",
    "ctloop_lander_events_total",
    "ctloop_serving_request_duration_seconds_bucket",
    "ctloop_serving_requests_total",
    "ctloop_drift_share",
    "ctloop_retrains_total",
    "ctloop_model_version",
}

params = pytest.mark.parametrize("env", OVERLAYS)


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _env_file(env: str, name: str) -> dict[str, str]:
    text = (K8S / "overlays" / env / name).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def _pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {name: d["spec"]["template"]["spec"] for name, d in _by_kind(objs, "Deployment").items()}
    specs.update({name: t["template"]["spec"] for name, t in _by_kind(objs, "PodTemplate").items()})
    return specs


# --- rendering and schema --------------------------------------------------------------------


@params
def test_overlay_renders_the_whole_loop(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered[env]
    kinds = Counter(o["kind"] for o in objs)
    assert set(_by_kind(objs, "Deployment")) == WORKLOADS
    assert set(_by_kind(objs, "PodTemplate")) == POD_TEMPLATES
    assert kinds["HorizontalPodAutoscaler"] == 2 and kinds["PodDisruptionBudget"] == 2
    assert kinds["NetworkPolicy"] >= 2 and kinds["Role"] >= 2 and kinds["RoleBinding"] >= 2
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"


@params
def test_every_object_validates_against_the_pinned_schema(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Strict validation (unknown fields are errors) against Kubernetes 1.35, the EKS version.
    Only core kinds are used (no CRDs: Prometheus scraping is plain config in a ConfigMap)."""
    errors = []
    for obj in rendered[env]:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert errors == []


def test_schema_validation_catches_mistakes() -> None:
    """The validator is live: a misplaced field (env under envFrom) is rejected."""
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "i:1", "envFrom": [{"name": "A", "value": "b"}]}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@params
def test_objects_live_in_the_overlay_namespace(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered[env]
    assert set(_by_kind(objs, "Namespace")) == {NAMESPACE[env]}
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE[env], (obj["kind"], obj["metadata"]["name"])
    assert not [o for o in objs if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


@params
def test_no_secret_and_no_placeholder_reaches_the_cluster(
    env: str, rendered_text: dict[str, str], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Secrets are created from AWS Secrets Manager at deploy time, never rendered from git;
    every terraform value the overlay substitutes has been substituted."""
    assert not _by_kind(rendered[env], "Secret")
    text = rendered_text[env]
    assert not re.search(r"role-arn: [A-Z_]+_ROLE_ARN", text)
    assert "artifacts-destination: MLFLOW_ARTIFACTS_DESTINATION" not in text
    assert "name: ctloop-aws" not in text, "the local-config ConfigMap must not be applied"
    assert not re.search(r"(?i)(password|secret_key|auth_token)\s*[:=]\s*\S{8,}", rendered_text[env])


# --- pods ------------------------------------------------------------------------------------


def _assert_hardened(name: str, spec: dict[str, Any], *, probes: bool) -> None:
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, name
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"])
        assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, (name, c["name"])
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], (name, c["name"])
        assert sc.get("privileged") is not True
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        assert isinstance(uid, int) and uid >= 10000, (name, uid)
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), (name, c["name"], kind)
        if probes:
            assert "livenessProbe" in c and "readinessProbe" in c, (name, c["name"])
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
        # Writable paths are explicit emptyDirs, since the root filesystem is read-only.
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if not image.startswith("quay.io/prometheus/"):
            assert "/tmp" in mounts, (name, c["name"])


@params
def test_deployments_are_hardened(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, deploy in _by_kind(rendered[env], "Deployment").items():
        spec = deploy["spec"]["template"]["spec"]
        _assert_hardened(name, spec, probes=True)
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("nodeSelector") == {"ctloop.io/node-pool": "cpu"}, name
        assert not spec.get("tolerations"), f"{name} must not tolerate the GPU taint"


@params
def test_pod_templates_are_hardened(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, tpl in _by_kind(rendered[env], "PodTemplate").items():
        spec = tpl["template"]["spec"]
        _assert_hardened(name, spec, probes=False)
        assert spec["restartPolicy"] == "Never"
        assert [c["name"] for c in spec["containers"]] == ["base"], (
            "KubernetesPodOperator expects container 'base'"
        )
        assert spec.get("automountServiceAccountToken") is (name == "ctloop-deploy"), name


@params
def test_images_come_from_the_environment_registry(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    registry = re.compile(
        rf"^\d{{12}}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/ctloop-{env}/(serving|job):[\w.-]+$"
    )
    for name, spec in _pod_specs(rendered[env]).items():
        for c in spec["containers"]:
            if name != "ctloop-pushgateway":
                assert registry.match(c["image"]), (name, c["image"])
                assert c["imagePullPolicy"] == "Always"


@params
def test_training_template_requests_a_gpu_on_the_tainted_pool(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The training pod requests nvidia.com/gpu, selects the GPU pool and tolerates exactly the
    taint terraform puts on it; nothing else tolerates it."""
    eks_locals = load_tf(TERRAFORM / "modules" / "eks" / "main.tf")["locals"][0]["gpu_taint"]
    assert eks_locals["effect"] == "NO_SCHEDULE"
    spec = _by_kind(rendered[env], "PodTemplate")["ctloop-training"]["template"]["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"ctloop.io/node-pool": "gpu"}
    assert spec["tolerations"] == [
        {"key": eks_locals["key"], "operator": "Equal", "value": eks_locals["value"], "effect": "NoSchedule"}
    ]
    for name, other in _pod_specs(rendered[env]).items():
        if name != "ctloop-training":
            assert "nvidia.com/gpu" not in json.dumps(other.get("tolerations", [])), name
            assert "nvidia.com/gpu" not in json.dumps(other["containers"][0]["resources"]), name


@params
def test_every_ctloop_pod_reads_the_settings(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    settings = _by_kind(rendered[env], "ConfigMap")["ctloop-settings"]["data"]
    assert settings["CTLOOP_RUNTIME"] == "kubernetes"
    assert settings["CTLOOP_LAKE_URI"].startswith("s3://")
    assert settings["CTLOOP_KAFKA_BOOTSTRAP"] and ":9098" in settings["CTLOOP_KAFKA_BOOTSTRAP"]
    assert settings["CTLOOP_STATE_DIR"] == "/var/lib/ctloop"
    assert settings["CTLOOP_MLFLOW_TRACKING_URI"] == "http://ctloop-mlflow:5000"
    assert settings == {**settings, **_env_file(env, "settings.env")}
    for name, spec in _pod_specs(rendered[env]).items():
        if name in {"ctloop-mlflow", "ctloop-pushgateway"}:
            continue
        refs = [e.get("configMapRef", {}).get("name") for e in spec["containers"][0].get("envFrom", [])]
        assert "ctloop-settings" in refs, name


# --- serving ---------------------------------------------------------------------------------


@params
def test_blue_green_serving(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered[env]
    deployments = _by_kind(objs, "Deployment")
    blue, green = deployments["ctloop-serving-blue"], deployments["ctloop-serving-green"]

    def normalised(d: dict[str, Any]) -> str:
        return json.dumps(d["spec"], sort_keys=True).replace("green", "SLOT").replace("blue", "SLOT")

    assert normalised(blue) == normalised(green), "blue and green differ by more than the slot"

    services = _by_kind(objs, "Service")
    live = services["ctloop-serving"]["spec"]["selector"]
    assert live["ctloop.io/slot"] in {"blue", "green"}
    matching = [
        n
        for n, d in deployments.items()
        if live.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(matching) == 1, "the live Service must select exactly one slot"
    for slot in ("blue", "green"):
        assert services[f"ctloop-serving-{slot}"]["spec"]["selector"]["ctloop.io/slot"] == slot
        hpa = _by_kind(objs, "HorizontalPodAutoscaler")[f"ctloop-serving-{slot}"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"ctloop-serving-{slot}",
        }
        assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        pdb = _by_kind(objs, "PodDisruptionBudget")[f"ctloop-serving-{slot}"]
        assert pdb["spec"]["selector"]["matchLabels"]["ctloop.io/slot"] == slot
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "PDB would block every drain"
        assert "replicas" not in deployments[f"ctloop-serving-{slot}"]["spec"], "the HPA owns replicas"


@params
def test_ports_probes_and_scrape_annotations(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployments = _by_kind(rendered[env], "Deployment")
    for slot in ("blue", "green"):
        tpl = deployments[f"ctloop-serving-{slot}"]["spec"]["template"]
        c = tpl["spec"]["containers"][0]
        assert c["ports"][0]["containerPort"] == 8080
        assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["args"] == ["serve", "--slot", slot]
        assert tpl["metadata"]["annotations"]["prometheus.io/port"] == "8080"
        assert tpl["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    lander = deployments["ctloop-lander"]["spec"]
    assert lander["replicas"] == 1 and lander["strategy"]["type"] == "Recreate"
    assert lander["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    assert lander["template"]["spec"]["containers"][0]["args"][:1] == ["ingest"]


# --- RBAC ------------------------------------------------------------------------------------


@params
def test_airflow_may_launch_pods_in_its_namespace_and_nothing_more(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objs = rendered[env]
    roles = _by_kind(objs, "Role")
    launcher = roles["airflow-pod-launcher"]
    allowed = {"pods", "pods/log", "pods/exec", "events", "podtemplates"}
    for rule in launcher["rules"]:
        assert rule["apiGroups"] == [""], rule
        assert set(rule["resources"]) <= allowed, rule
        assert "*" not in rule["verbs"] and not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if rule["resources"] == ["podtemplates"]:
            assert rule["verbs"] == ["get"] and set(rule["resourceNames"]) == POD_TEMPLATES
    assert "create" in next(r for r in launcher["rules"] if r["resources"] == ["pods"])["verbs"]
    text = json.dumps([r["rules"] for r in roles.values()])
    assert "secrets" not in text and '"*"' not in text

    bindings = _by_kind(objs, "RoleBinding")
    launcher_binding = bindings["airflow-pod-launcher"]
    assert launcher_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "airflow-pod-launcher",
    }
    assert {s["name"] for s in launcher_binding["subjects"]} == {
        "airflow-scheduler",
        "airflow-worker",
        "airflow-triggerer",
    }
    for binding in bindings.values():
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE[env], subject


@params
def test_deployer_may_only_switch_the_serving_slots(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    role = _by_kind(rendered[env], "Role")["ctloop-deployer"]
    writes = [r for r in role["rules"] if set(r["verbs"]) & {"patch", "update", "create", "delete"}]
    for rule in writes:
        assert rule["resourceNames"], rule
        assert all(n.startswith("ctloop-serving") for n in rule["resourceNames"]), rule
    templates = _by_kind(rendered[env], "PodTemplate")
    assert templates["ctloop-deploy"]["template"]["spec"]["serviceAccountName"] == "ctloop-deployer"


@params
def test_service_accounts_carry_the_terraform_irsa_roles(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    aws = _env_file(env, "aws.env")
    sas = _by_kind(rendered[env], "ServiceAccount")
    for workload in ("lander", "job", "serving", "feast", "mlflow"):
        annotation = sas[f"ctloop-{workload}"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert annotation == aws[f"{workload.upper()}_ROLE_ARN"]
        assert re.fullmatch(rf"arn:aws:iam::\d{{12}}:role/ctloop-{env}-{workload}", annotation)
    assert "eks.amazonaws.com/role-arn" not in sas["ctloop-deployer"]["metadata"].get("annotations", {})
    mlflow_cm = next(
        o
        for o in rendered[env]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ctloop-mlflow")
    )
    assert mlflow_cm["data"]["artifacts-destination"] == aws["MLFLOW_ARTIFACTS_DESTINATION"]


# --- network ---------------------------------------------------------------------------------


@params
def test_network_is_default_deny_with_explicit_allows(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    policies = _by_kind(rendered[env], "NetworkPolicy")
    deny = policies["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    vpc_cidr = _env_file(env, "aws.env")["VPC_CIDR"]
    cidrs = {
        b["ipBlock"]["cidr"]
        for p in policies.values()
        for r in p["spec"].get("ingress", []) + p["spec"].get("egress", [])
        for b in r.get("from", r.get("to", []))
        if "ipBlock" in b
    }
    assert cidrs == {vpc_cidr, "0.0.0.0/0"}
    # The only egress to the internet is HTTPS.
    for p in policies.values():
        for rule in p["spec"].get("egress", []):
            if any(b.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for b in rule.get("to", [])):
                assert rule["ports"] == [{"protocol": "TCP", "port": 443}]

    # Every ctloop workload that serves something is admitted by a named policy.
    for app in ("ctloop-serving", "ctloop-feast", "ctloop-mlflow", "ctloop-pushgateway"):
        assert any(
            p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == app
            for p in policies.values()
        ), app


# --- monitoring ------------------------------------------------------------------------------


@params
def test_prometheus_scrape_config(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    cm = _by_kind(rendered[env], "ConfigMap")["ctloop-prometheus-scrape"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(cm["data"]["scrape-configs.yaml"])}
    assert {"ctloop-pods", "ctloop-pushgateway", "airflow-statsd"} <= set(jobs)
    relabels = jobs["ctloop-pods"]["relabel_configs"]
    keep_app = next(
        r
        for r in relabels
        if r.get("action") == "keep"
        and r["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    )
    keep_scrape = next(
        r
        for r in relabels
        if r.get("action") == "keep"
        and r["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    )
    # Every pod that opts in to scraping is kept by the job, and its port is a container port.
    for name, deploy in _by_kind(rendered[env], "Deployment").items():
        meta = deploy["spec"]["template"]["metadata"]
        if meta.get("annotations", {}).get("prometheus.io/scrape") == "true":
            assert re.fullmatch(keep_app["regex"], meta["labels"]["app.kubernetes.io/name"]), name
            assert re.fullmatch(keep_scrape["regex"], "true")
            ports = {
                p["containerPort"]
                for c in deploy["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            assert int(meta["annotations"]["prometheus.io/port"]) in ports, name


@params
def test_grafana_dashboard_covers_the_loop(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    cm = _by_kind(rendered[env], "ConfigMap")["ctloop-grafana-dashboards"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["ctloop.json"])
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("ingestion lag", "serving latency", "drift", "retrain"):
        assert topic in titles, topic
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bctloop_[a-z_]+", target["expr"]))
    assert used == METRIC_CONTRACT


# --- overlays --------------------------------------------------------------------------------


def test_overlays_share_the_same_replacements() -> None:
    texts = {env: (K8S / "overlays" / env / "replacements.yaml").read_text() for env in OVERLAYS}
    assert len(set(texts.values())) == 1


def test_overlays_carry_the_same_terraform_keys() -> None:
    for name in ("settings.env", "aws.env"):
        assert len({frozenset(_env_file(env, name)) for env in OVERLAYS}) == 1, name


def test_prod_is_sized_for_availability(rendered: dict[str, list[dict[str, Any]]]) -> None:
    hpa = _by_kind(rendered["prod"], "HorizontalPodAutoscaler")["ctloop-serving-blue"]["spec"]
    pdb = _by_kind(rendered["prod"], "PodDisruptionBudget")["ctloop-serving-blue"]["spec"]
    assert hpa["minReplicas"] >= 3 and pdb["minAvailable"] >= 2


def test_kubectl_kustomize_renders_the_same(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Users apply with `kubectl apply -k`, whose embedded kustomize is newer (v5): same objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    for env in OVERLAYS:
        ours = sorted(json.dumps(o, sort_keys=True) for o in rendered[env])
        theirs = sorted(
            json.dumps(o, sort_keys=True)
            for o in parse_objects(render(K8S / "overlays" / env, [kubectl, "kustomize"]))
        )
        assert ours == theirs, env
