"""The kubernetes runtime: every job task is a pod built from its PodTemplate, valid for Kubernetes 1.35.

The DAGs are built with CTLOOP_RUNTIME=kubernetes. The operator reads its PodTemplate from the API
when it runs; here the API is a fake whose only object is k8s/base/jobs/pod-templates.yaml, so the
pods are exactly what the cluster would get (before the overlays' patches). No cluster is contacted.
"""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.dags.conftest import ROOT

KUBERNETES_VERSION = "1.35.0"  # tests/infra/infra_helpers.py: the EKS version
TEMPLATES = {d["metadata"]["name"]: d
             for d in yaml.safe_load_all((ROOT / "k8s" / "base" / "jobs" / "pod-templates.yaml").read_text())}


class FakeCoreV1:
    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []

    def read_namespaced_pod_template(self, name: str, namespace: str) -> Any:
        from kubernetes.client import ApiClient

        self.reads.append((name, namespace))
        if name not in TEMPLATES or TEMPLATES[name]["metadata"]["namespace"] != namespace:
            raise LookupError(f"podtemplates {namespace}/{name} not found")
        return ApiClient()._ApiClient__deserialize(TEMPLATES[name], "V1PodTemplate")


class FakeHook:
    def __init__(self) -> None:
        self.core_v1_client = FakeCoreV1()

    def get_namespace(self) -> str:
        return "ctloop"

    def get_xcom_sidecar_container_image(self) -> str:
        return "alpine:3.20"

    def get_xcom_sidecar_container_resources(self) -> None:
        return None


@pytest.fixture(scope="module")
def pods() -> dict[str, dict[str, Any]]:
    """{dag_id.task_id: pod as the API would receive it} for every pod task of every DAG."""
    from airflow.dag_processing.dagbag import DagBag
    from kubernetes.client import ApiClient

    previous = {k: os.environ.get(k) for k in ("CTLOOP_RUNTIME", "CTLOOP_JOB_SECRETS")}
    os.environ.update(CTLOOP_RUNTIME="kubernetes", CTLOOP_JOB_SECRETS="ctloop-extra-env")
    try:
        bag = DagBag(str(ROOT / "dags"))
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert bag.import_errors == {}
    built = {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            if type(task).__name__ != "PodTemplateJobOperator":
                continue
            task.__dict__["hook"] = FakeHook()
            pod = task.build_pod_request_obj(dry_run=True)
            built[f"{dag.dag_id}.{task.task_id}"] = ApiClient().sanitize_for_serialization(pod)
    return built


def test_every_job_task_is_a_pod(pods: dict[str, dict[str, Any]]) -> None:
    assert {"fraud_ingest.announce", "fraud_ingest.announced", "fraud_features.spark_clean",
            "fraud_features.materialize", "fraud_train.train", "fraud_train.retrain_policy", "fraud_train.register",
            "fraud_train.deploy", "fraud_train.retrain_finish"} <= set(pods)
    # the kubernetes runtime lands with the lander Deployment (CTLOOP_LANDING=service): the DAG never joins
    # the consumer group, it only announces what landed
    assert "fraud_ingest.land" not in pods


def test_pods_validate_against_the_kubernetes_schema(pods: dict[str, dict[str, Any]]) -> None:
    errors = []
    for name, pod in pods.items():
        try:
            kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message}")
    assert errors == []


def test_pods_run_the_job_command_hardened_with_the_settings(pods: dict[str, dict[str, Any]]) -> None:
    for name, pod in pods.items():
        spec = pod["spec"]
        base = next(c for c in spec["containers"] if c["name"] == "base")
        assert base["command"] == ["ctloop"] and base["args"][:2] == ["--result-file", "/airflow/xcom/return.json"]
        assert base["image"] == "ctloop/job:0.1.0", "the template's image when CTLOOP_JOB_IMAGE is unset"
        refs = [e.get("configMapRef", {}).get("name") or e.get("secretRef", {}).get("name") for e in base["envFrom"]]
        deploy = name == "fraud_train.deploy"  # the deploy step: its template's API identity and the serving token
        assert refs == ["ctloop-settings", "ctloop-extra-env", *(["ctloop-serving-token"] if deploy else [])], name
        assert spec["serviceAccountName"] == ("ctloop-deployer" if deploy else "ctloop-job"), name
        assert spec["automountServiceAccountToken"] is deploy, name
        assert spec["restartPolicy"] == "Never" and pod["metadata"]["namespace"] == "ctloop"
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:  # the job and the XCom sidecar
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
        assert "/tmp" in {m["mountPath"] for m in base["volumeMounts"]}
        assert "/airflow/xcom" in {m["mountPath"] for m in base["volumeMounts"]}, "the result reaches XCom"
        assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ctloop"


def test_training_pod_gets_a_gpu_on_the_gpu_pool(pods: dict[str, dict[str, Any]]) -> None:
    for name, pod in pods.items():
        spec = pod["spec"]
        resources = spec["containers"][0]["resources"]
        if name == "fraud_train.train":
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
            assert spec["nodeSelector"] == {"ctloop.io/node-pool": "gpu"}
            assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true",
                                            "effect": "NoSchedule"}]
            assert pod["metadata"]["labels"]["ctloop.io/kind"] == "training"
        else:
            assert "nvidia.com/gpu" not in resources.get("limits", {}), name
            assert spec["nodeSelector"] == {"ctloop.io/node-pool": "cpu"} and not spec.get("tolerations"), name


def test_the_template_is_read_at_run_time_not_at_parse_time() -> None:
    from ctloop.config.settings import load_settings
    from ctloop_airflow.jobs import job_task

    task = job_task("t", ["spec"], settings=load_settings(runtime="kubernetes", job_image="registry/job:1.2"))
    hook = FakeHook()
    task.__dict__["hook"] = hook
    assert hook.core_v1_client.reads == [] and task.full_pod_spec is None
    pod = task.build_pod_request_obj(dry_run=True)
    assert hook.core_v1_client.reads == [("ctloop-job", "ctloop")]
    assert pod.spec.containers[0].image == "registry/job:1.2", "CTLOOP_JOB_IMAGE overrides the template's image"
    assert task.startup_timeout_seconds == 900 and task.do_xcom_push
