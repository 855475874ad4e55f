"""docs/deploy-aws.md walks from an empty account to the loop running, and every repository
path it names exists."""

from __future__ import annotations

import re

from infra_helpers import REPO

DOC = REPO / "docs" / "deploy-aws.md"


def test_guide_covers_every_step() -> None:
    text = DOC.read_text()
    for needle in (
        "terraform init -backend-config=backend.hcl",
        "terraform apply",
        "use_lockfile",
        "aws eks update-kubeconfig",
        "nvidia-device-plugin",
        "docker buildx build",
        "docker/$image/Dockerfile",
        "output -raw kustomize_settings_env",
        "output -raw kustomize_aws_env",
        "kubectl apply -k k8s/overlays/$ENV",
        "helm upgrade --install airflow apache-airflow/airflow",
        "-f k8s/airflow/values.yaml",
        "KubernetesExecutor",
        "CTLOOP_RUNTIME",
        "kubernetes",
        "dags unpause",
        "dags trigger",
        "ctloop.io/slot",
        "8080",
        "9108",
    ):
        assert needle in text, needle
    for secret in (
        "airflow-metadata",
        "airflow-fernet-key",
        "airflow-api-secret-key",
        "airflow-jwt-secret",
        "ctloop-mlflow-db",
        "ctloop-feast-redis",
    ):
        assert secret in text, secret


def test_secrets_named_in_the_guide_are_the_ones_the_manifests_use() -> None:
    manifests = "\n".join(p.read_text() for p in (REPO / "k8s").rglob("*.yaml"))
    for name in (
        "ctloop-mlflow-db",
        "ctloop-feast-redis",
        "airflow-metadata",
        "airflow-fernet-key",
        "airflow-api-secret-key",
        "airflow-jwt-secret",
    ):
        assert name in manifests, name


def test_paths_in_the_guide_exist() -> None:
    text = DOC.read_text()
    pattern = re.compile(r"(?<![\w/$.-])((?:terraform|k8s|docker|tools|tests|docs)/[\w./{},*$<>-]*)")
    paths = {m.group(1).rstrip(".,") for m in pattern.finditer(text)}
    assert paths
    for raw in paths:
        if "$" in raw or "<" in raw:
            continue
        # Expand the {a,b} shorthand used in the tables.
        options = [raw]
        while any("{" in o for o in options):
            expanded = []
            for o in options:
                m = re.search(r"\{([^}]*)\}", o)
                if not m:
                    expanded.append(o)
                    continue
                expanded += [o[: m.start()] + alt + o[m.end() :] for alt in m.group(1).split(",")]
            options = expanded
        for option in options:
            option = option.rstrip("/.")
            found = list(REPO.glob(option)) if "*" in option else [REPO / option]
            assert found and all(p.exists() for p in found), option
