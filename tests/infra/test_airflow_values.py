"""k8s/airflow/values*.yaml for the official apache-airflow/airflow Helm chart: they parse, use
only keys the chart has, pick the KubernetesExecutor, point at external Postgres through
Secrets, switch ctloop to the kubernetes runtime, and agree with the RBAC in k8s/base."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from infra_helpers import K8S

VALUES = ("values.yaml", "values-dev.yaml", "values-prod.yaml")

# Top-level keys of the official chart's values.yaml (chart 1.18, Airflow 3). The chart cannot be
# downloaded here, so this list stands in for `helm lint`; extend it when using a new key.
CHART_TOP_LEVEL_KEYS = {
    "fullnameOverride",
    "nameOverride",
    "useStandardNaming",
    "revisionHistoryLimit",
    "uid",
    "gid",
    "securityContext",
    "securityContexts",
    "containerLifecycleHooks",
    "airflowHome",
    "defaultAirflowRepository",
    "defaultAirflowTag",
    "defaultAirflowDigest",
    "airflowVersion",
    "images",
    "nodeSelector",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "schedulerName",
    "labels",
    "ingress",
    "networkPolicies",
    "airflowPodAnnotations",
    "airflowConfigAnnotations",
    "airflowLocalSettings",
    "rbac",
    "executor",
    "allowPodLaunching",
    "env",
    "volumes",
    "volumeMounts",
    "secret",
    "enableBuiltInSecretEnvVars",
    "priorityClasses",
    "extraSecrets",
    "extraConfigMaps",
    "extraEnv",
    "extraEnvFrom",
    "data",
    "fernetKey",
    "fernetKeySecretName",
    "apiSecretKey",
    "apiSecretKeySecretName",
    "jwtSecret",
    "jwtSecretName",
    "webserverSecretKey",
    "webserverSecretKeySecretName",
    "kerberos",
    "workers",
    "scheduler",
    "createUserJob",
    "migrateDatabaseJob",
    "apiServer",
    "webserver",
    "triggerer",
    "dagProcessor",
    "flower",
    "statsd",
    "pgbouncer",
    "redis",
    "registry",
    "elasticsearch",
    "opensearch",
    "ports",
    "quotas",
    "limits",
    "cleanup",
    "databaseCleanup",
    "postgresql",
    "config",
    "multiNamespaceMode",
    "podTemplate",
    "dags",
    "logs",
    "apiServerConfig",
    "apiServerConfigConfigMapName",
    "serviceAccount",
}
COMPONENT_KEYS = {
    "replicas",
    "resources",
    "serviceAccount",
    "podDisruptionBudget",
    "persistence",
    "enabled",
    "nodeSelector",
    "tolerations",
    "affinity",
    "env",
    "args",
    "command",
    "securityContexts",
}
SECRET_VALUE_KEYS = {
    "fernetKey",
    "webserverSecretKey",
    "apiSecretKey",
    "jwtSecret",
    "pass",
    "password",
    "defaultUser",
}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / "airflow" / name).read_text())


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    items = []
    if isinstance(node, dict):
        for k, v in node.items():
            items.append((f"{path}.{k}".lstrip("."), v))
            items.extend(_walk(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            items.extend(_walk(v, f"{path}[{i}]"))
    return items


@pytest.mark.parametrize("name", VALUES)
def test_values_parse_and_use_chart_keys(name: str) -> None:
    values = _load(name)
    assert isinstance(values, dict) and values
    assert set(values) <= CHART_TOP_LEVEL_KEYS, set(values) - CHART_TOP_LEVEL_KEYS
    for component in ("scheduler", "apiServer", "dagProcessor", "triggerer", "workers"):
        if component in values:
            assert set(values[component]) <= COMPONENT_KEYS, (
                component,
                set(values[component]) - COMPONENT_KEYS,
            )


@pytest.mark.parametrize("name", VALUES)
def test_no_secret_in_values(name: str) -> None:
    for path, value in _walk(_load(name)):
        key = path.rsplit(".", 1)[-1]
        assert key not in SECRET_VALUE_KEYS, path
        if isinstance(value, str):
            assert not re.search(r"postgres(ql)?://[^/\s]*:[^@\s]+@", value), path


def test_executor_database_and_secrets() -> None:
    values = _load("values.yaml")
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == "3.3.2"
    assert values["postgresql"]["enabled"] is False and values["redis"]["enabled"] is False
    assert values["data"]["metadataSecretName"] == "airflow-metadata"
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key].startswith("airflow-"), key
    assert values["createUserJob"]["enabled"] is False
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False
    assert values["images"]["airflow"]["repository"] and values["images"]["airflow"]["tag"] != "latest"


def test_ctloop_runtime_switch_and_settings() -> None:
    values = _load("values.yaml")
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["CTLOOP_RUNTIME"] == "kubernetes"
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"configMapRef": {"name": "ctloop-settings"}} in env_from
    base_settings = (K8S / "base" / "settings.env").read_text()
    assert "CTLOOP_RUNTIME=kubernetes" in base_settings
    assert values["config"]["logging"]["remote_logging"] == "True"


def test_rbac_comes_from_kustomize_and_matches_chart_names() -> None:
    """The chart creates no RBAC; k8s/base/rbac/airflow.yaml binds the service accounts the chart
    creates for release "airflow" (<release>-<component>)."""
    values = _load("values.yaml")
    assert values["rbac"]["create"] is False
    assert values["allowPodLaunching"] is True
    rbac = list(yaml.safe_load_all((K8S / "base" / "rbac" / "airflow.yaml").read_text()))
    subjects = {s["name"] for doc in rbac if doc["kind"] == "RoleBinding" for s in doc["subjects"]}
    chart_sas = {f"airflow-{c}" for c in ("scheduler", "worker", "triggerer", "api-server", "dag-processor")}
    assert subjects <= chart_sas
    for component in ("scheduler", "workers", "triggerer", "apiServer", "dagProcessor"):
        assert values[component]["serviceAccount"]["create"] is True


def test_networking_and_metrics() -> None:
    values = _load("values.yaml")
    assert values["networkPolicies"]["enabled"] is True, "k8s/base denies all ingress by default"
    assert values["statsd"]["enabled"] is True
    assert values["nodeSelector"] == {"ctloop.io/node-pool": "cpu"}
    pod = values["securityContexts"]["pod"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert values["securityContexts"]["containers"]["allowPrivilegeEscalation"] is False
