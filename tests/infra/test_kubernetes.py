"""The Kustomize overlays render, every object validates against the pinned Kubernetes schema,
and the objects say what the loop needs: hardened pods, blue-green serving, a GPU training
template, namespaced least-privilege RBAC, default-deny networking, metrics and a dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra_helpers import (
    DOCKER,
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
    "ctloop_serving_request_seconds_bucket",
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
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["args"] == ["serve", "slot", "--pipeline", "fraud", "--slot", slot, "--host", "0.0.0.0",
                             "--port", "8080", "--alias", "champion"]
        assert tpl["metadata"]["annotations"]["prometheus.io/port"] == "8080"
        assert tpl["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    lander = deployments["ctloop-lander"]["spec"]
    assert lander["replicas"] == 1 and lander["strategy"]["type"] == "Recreate"
    assert lander["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    assert lander["template"]["spec"]["containers"][0]["args"][:1] == ["ingest"]


@params
def test_one_landing_path_the_lander_lands_every_pipeline(
    env: str, rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubernetes runtime lands with the lander Deployment (CTLOOP_LANDING=service, from the ConfigMap that
    Airflow reads too, so the ingest DAGs only announce), and the Deployment names no pipeline: it lands every
    spec in the image, one supervised process each, so a second pipeline needs no new manifest."""
    from ctloop.config.settings import load_settings

    settings = _by_kind(rendered[env], "ConfigMap")["ctloop-settings"]["data"]
    assert settings["CTLOOP_LANDING"] == "service"
    lander = _by_kind(rendered[env], "Deployment")["ctloop-lander"]
    assert lander["spec"]["template"]["spec"]["containers"][0]["args"] == ["ingest", "--all", "--follow"]
    assert "--pipeline" not in json.dumps(lander) and "fraud" not in json.dumps(lander)
    # what the images read: the ConfigMap is valid settings, and its landing is the service
    for name in [n for n in os.environ if n.upper().startswith("CTLOOP_")]:
        monkeypatch.delenv(name)
    for name, value in settings.items():
        if name.startswith("CTLOOP_"):
            monkeypatch.setenv(name, value)
    assert load_settings().landing == "service"


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
def test_deployer_role_allows_exactly_what_the_deploy_step_calls(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """jobs/ctloop/deploy/kube.py reads the live Service and both slot Deployments, patches the idle one's
    --version, reads its rollout status, patches the Service's selector and lists the new slot's pods (the
    calls are recorded against a fake API server in tests/integration/test_deploy.py): those verbs, no more."""
    role = _by_kind(rendered[env], "Role")["ctloop-deployer"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ()))): sorted(r["verbs"])
             for r in role["rules"]}
    slots = ("ctloop-serving-blue", "ctloop-serving-green")
    assert rules == {
        (("apps",), ("deployments",), slots): ["get", "patch"],
        (("apps",), ("deployments/status",), slots): ["get"],
        (("",), ("services",), ("ctloop-serving",)): ["get", "patch"],
        (("",), ("pods",), ()): ["list"],
    }


def test_the_serving_image_runs_the_server_the_manifests_run() -> None:
    """docker/serving: `ctloop serve slot` by default, health checked on the OIP liveness route, as the slots."""
    text = (DOCKER / "serving" / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1))
    assert cmd[:2] == ["serve", "slot"] and cmd[cmd.index("--port") + 1] == "8080"
    assert "http://127.0.0.1:8080/v2/health/live" in re.search(r"^HEALTHCHECK .*\n.*$", text, flags=re.M).group(0)
    deployment = yaml.safe_load((K8S / "base" / "serving" / "deployment-blue.yaml").read_text())
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == cmd[:2] and args[args.index("--port") + 1] == cmd[cmd.index("--port") + 1]


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


@params
def test_only_job_and_serving_pods_reach_mlflow(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Serving may connect (it loads models); what it may do is MLflow's basic-auth app's business."""
    policies = _by_kind(rendered[env], "NetworkPolicy")
    peers = [peer for rule in policies["allow-mlflow-from-clients"]["spec"]["ingress"] for peer in rule["from"]]
    assert peers == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ctloop-job"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ctloop-serving"}}},
    ]
    for name, policy in policies.items():
        if name != "allow-mlflow-from-clients":
            ports = [p.get("port") for r in policy["spec"].get("ingress", []) for p in r.get("ports", [])]
            assert 5000 not in ports, f"{name} admits more clients to MLflow"


# --- MLflow authentication -------------------------------------------------------------------


def _secret_refs(spec: dict[str, Any]) -> set[str]:
    """Names of the Secrets a pod spec reads: env, envFrom and volumes."""
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for c in spec["containers"]:
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                  if "secretKeyRef" in e.get("valueFrom", {})}
        names |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
    return names


@params
def test_mlflow_runs_its_basic_auth_app(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """No anonymous access: the basic-auth app, its config and bootstrap admin from Secrets, never from git."""
    spec = _by_kind(rendered[env], "Deployment")["ctloop-mlflow"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"][:2] == ["server", "--app-name=basic-auth"]
    variables = {e["name"]: e for e in container["env"]}
    config = variables["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert variables[name]["valueFrom"]["secretKeyRef"]["name"] == "ctloop-mlflow-auth", name
    mount = next(m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "ctloop-mlflow-auth"
    assert volume["secret"]["items"] == [{"key": "basic_auth.ini", "path": config.rsplit("/", 1)[1]}]
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "the auth config holds the database password"
    assert _secret_refs(spec) == {"ctloop-mlflow-db", "ctloop-mlflow-auth"}


@params
def test_serving_signs_in_to_mlflow_read_only_and_jobs_as_the_writer(
    env: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objs = rendered[env]
    specs = _pod_specs(objs)
    for slot in ("blue", "green"):
        spec = specs[f"ctloop-serving-{slot}"]
        variables = {e["name"]: e for e in spec["containers"][0]["env"]}
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert variables[name]["valueFrom"]["secretKeyRef"] == {"name": "ctloop-mlflow-reader", "key": name}
        assert variables["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]["value"] == "false"
        assert _secret_refs(spec) == {"ctloop-mlflow-reader", "ctloop-serving-token"}, \
            "serving holds only the read-only user and its own bearer token"
        assert variables["CTLOOP_SERVING_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "ctloop-serving-token", "key": "CTLOOP_SERVING_TOKEN"}
    # Every job pod (CPU jobs, GPU training, the deploy step) signs in as the writer.
    for name in POD_TEMPLATES:
        variables = {e["name"]: e for e in specs[name]["containers"][0]["env"]}
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert variables[var]["valueFrom"]["secretKeyRef"] == {"name": "ctloop-mlflow-writer", "key": var}, name
        assert variables["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]["value"] == "false"
    assert "TF_FORCE_GPU_ALLOW_GROWTH" in {e["name"] for e in specs["ctloop-training"]["containers"][0]["env"]}
    # The writer reaches job pods only; the admin, its config and the database MLflow only.
    for name, spec in specs.items():
        if name not in POD_TEMPLATES:
            assert "ctloop-mlflow-writer" not in _secret_refs(spec), name
        if name != "ctloop-mlflow":
            assert not _secret_refs(spec) & {"ctloop-mlflow-auth", "ctloop-mlflow-db"}, name


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
