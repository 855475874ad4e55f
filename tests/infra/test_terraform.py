"""Terraform, checked statically (no provider download, no AWS account): every file parses,
modules follow the modules/<name>/{main,variables,outputs,versions}.tf layout, variables are
typed and described, providers are pinned, environments compose the modules over a remote
backend, and the security-relevant settings are what the design says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from infra_helpers import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    TERRAFORM,
    block,
    env_keys,
    load_tf,
    load_tf_dir,
    module_calls,
    outputs,
    resources,
    variables,
)

MODULES = sorted(p.name for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
ENVS = sorted(p.name for p in (TERRAFORM / "envs").iterdir() if p.is_dir())
ROOTS = [TERRAFORM / "modules" / m for m in MODULES] + [TERRAFORM / "envs" / e for e in ENVS]
REQUIRED_MODULES = {"network", "lake", "eks", "msk", "rds", "redis", "ecr", "irsa"}


def _module(name: str) -> dict[str, list[Any]]:
    return load_tf_dir(TERRAFORM / "modules" / name)


def _env(name: str) -> dict[str, list[Any]]:
    return load_tf_dir(TERRAFORM / "envs" / name)


def test_every_tf_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 4 * len(REQUIRED_MODULES)
    for path in files:
        assert load_tf(path), path


def test_modules_and_environments_exist() -> None:
    assert REQUIRED_MODULES <= set(MODULES)
    assert set(ENVS) == set(OVERLAYS) == {"dev", "prod"}


@pytest.mark.parametrize("module", MODULES)
def test_module_layout(module: str) -> None:
    files = {p.name for p in (TERRAFORM / "modules" / module).glob("*.tf")}
    assert files == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_variable_is_typed_and_described(root: Path) -> None:
    for name, body in variables(load_tf_dir(root)).items():
        assert "type" in body, f"{root.name}: variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"{root.name}: variable {name} has no description"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_output_is_described(root: Path) -> None:
    outs = outputs(load_tf_dir(root))
    assert outs, root
    for name, body in outs.items():
        assert len(body.get("description", "")) > 10, f"{root.name}: output {name}"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_providers_are_pinned(root: Path) -> None:
    versions = load_tf(root / "versions.tf")["terraform"][0]
    assert re.fullmatch(r">= 1\.\d+\.\d+", versions["required_version"])
    required = versions["required_providers"][0]
    assert required["aws"] == {"source": "hashicorp/aws", "version": "~> 6.0"}
    for name, spec in required.items():
        assert re.fullmatch(r"~> \d+\.\d+", spec["version"]), (root, name)
    # Every provider a root uses is declared there.
    text = "\n".join(p.read_text() for p in root.glob("*.tf"))
    used = set(re.findall(r'^(?:resource|data)\s+"([a-z0-9]+)_', text, flags=re.MULTILINE))
    assert used <= set(required), (root, used - set(required))


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_composes_modules_over_remote_state(env: str) -> None:
    tf = _env(env)
    backend = load_tf(TERRAFORM / "envs" / env / "versions.tf")["terraform"][0]["backend"][0]["s3"]
    assert backend["key"] == f"ctloop/{env}/terraform.tfstate"
    assert backend["encrypt"] is True and backend["use_lockfile"] is True
    assert (TERRAFORM / "envs" / env / "backend.hcl.example").exists()
    calls = module_calls(tf)
    sources = {body["source"] for body in calls.values()}
    assert all(s.startswith("../../modules/") for s in sources), sources
    composed = {s.removeprefix("../../modules/") for s in sources}
    assert composed | {"irsa"} == set(MODULES), "every module is used (irsa through workload_iam)"
    assert not resources(tf, "aws_s3_bucket"), "environments compose modules, they do not declare resources"


def test_environments_compose_the_same_modules() -> None:
    assert set(module_calls(_env("dev"))) == set(module_calls(_env("prod")))
    assert {n: v.get("type") for n, v in variables(_env("dev")).items()} == {
        n: v.get("type") for n, v in variables(_env("prod")).items()
    }


# --- EKS -------------------------------------------------------------------------------------


def test_gpu_node_group_is_tainted_and_labelled() -> None:
    tf = _module("eks")
    taint_local = tf["locals"][0]["gpu_taint"]
    assert taint_local == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    groups = resources(tf, "aws_eks_node_group")
    gpu, cpu = groups["gpu"], groups["cpu"]
    taint = block(gpu, "taint")
    assert taint["effect"] == "${local.gpu_taint.effect}" and taint["key"] == "${local.gpu_taint.key}"
    assert "NVIDIA" in gpu["ami_type"]
    assert gpu["labels"]["ctloop.io/node-pool"] == "gpu"
    assert cpu["labels"]["ctloop.io/node-pool"] == "cpu" and "taint" not in cpu


def test_eks_hardening_and_version() -> None:
    tf = _module("eks")
    cluster = resources(tf, "aws_eks_cluster")["this"]
    assert cluster["version"] == "${var.kubernetes_version}"
    assert variables(tf)["kubernetes_version"]["default"] == KUBERNETES_VERSION.rsplit(".", 1)[0]
    for env in ("dev", "prod"):
        assert module_calls(_env(env))["eks"]["kubernetes_version"] == KUBERNETES_VERSION.rsplit(".", 1)[0]
    assert block(cluster, "encryption_config")["resources"] == ["secrets"]
    assert set(cluster["enabled_cluster_log_types"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    vpc = block(cluster, "vpc_config")
    assert vpc["endpoint_private_access"] is True
    assert variables(tf)["endpoint_public_access"]["default"] is False
    for lt in resources(tf, "aws_launch_template").values():
        meta = block(lt, "metadata_options")
        assert meta["http_tokens"] == "required" and meta["http_put_response_hop_limit"] == 1
        assert block(block(lt, "block_device_mappings"), "ebs")["encrypted"] is True
    cni = resources(tf, "aws_eks_addon")["vpc_cni"]
    assert "enableNetworkPolicy" in cni["configuration_values"], (
        "NetworkPolicies in k8s/ need the CNI's enforcement"
    )
    assert resources(tf, "aws_iam_openid_connect_provider"), "IRSA needs the OIDC provider"


# --- lake ------------------------------------------------------------------------------------


def test_lake_bucket_is_versioned_encrypted_private_and_tiered() -> None:
    tf = _module("lake")
    assert (
        block(resources(tf, "aws_s3_bucket_versioning")["lake"], "versioning_configuration")["status"]
        == "Enabled"
    )
    sse = block(
        block(resources(tf, "aws_s3_bucket_server_side_encryption_configuration")["lake"], "rule"),
        "apply_server_side_encryption_by_default",
    )
    assert sse["sse_algorithm"] == "aws:kms" and sse["kms_master_key_id"] == "${aws_kms_key.lake.arn}"
    pab = resources(tf, "aws_s3_bucket_public_access_block")["lake"]
    assert all(
        pab[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    rules = resources(tf, "aws_s3_bucket_lifecycle_configuration")["lake"]["rule"]
    ids = {r["id"] for r in rules}
    assert {"abort-incomplete-uploads", "expire-noncurrent-versions", "tier-raw"} <= ids
    assert all(r["status"] == "Enabled" for r in rules)
    assert resources(tf, "aws_s3_bucket_logging")["lake"]["target_bucket"] == "${aws_s3_bucket.logs.id}"
    policy = next(
        iter(d for item in tf["data"] for kind, d in item.items() if kind == "aws_iam_policy_document")
    )["lake_tls_only"]
    statement = block(policy, "statement")
    assert (
        statement["effect"] == "Deny" and block(statement, "condition")["variable"] == "aws:SecureTransport"
    )
    for name in ("lake", "logs"):
        assert (
            resources(tf, "aws_kms_key").get("lake")
            and resources(tf, "aws_s3_bucket_public_access_block")[name]
        )


# --- data services ---------------------------------------------------------------------------


def test_msk_is_private_tls_and_iam_authenticated() -> None:
    cluster = resources(_module("msk"), "aws_msk_cluster")["this"]
    auth = block(cluster, "client_authentication")
    assert auth["unauthenticated"] is False and block(auth, "sasl")["iam"] is True
    transit = block(block(cluster, "encryption_info"), "encryption_in_transit")
    assert transit == {"client_broker": "TLS", "in_cluster": True}
    assert (
        block(block(block(cluster, "broker_node_group_info"), "connectivity_info"), "public_access")["type"]
        == "DISABLED"
    )
    assert block(block(block(cluster, "logging_info"), "broker_logs"), "cloudwatch_logs")["enabled"] is True


def test_rds_is_encrypted_private_and_tls_only() -> None:
    tf = _module("rds")
    db = resources(tf, "aws_db_instance")["this"]
    assert db["storage_encrypted"] is True and db["publicly_accessible"] is False
    assert db["manage_master_user_password"] is True, "no master password in state or code"
    assert db["deletion_protection"] == "${var.deletion_protection}" and db["multi_az"] == "${var.multi_az}"
    params = {p["name"]: p["value"] for p in resources(tf, "aws_db_parameter_group")["this"]["parameter"]}
    assert params["rds.force_ssl"] == "1"
    assert variables(tf)["databases"]["default"] == ["airflow", "mlflow"]


def test_redis_is_encrypted_authenticated_and_multi_az() -> None:
    group = resources(_module("redis"), "aws_elasticache_replication_group")["this"]
    assert group["at_rest_encryption_enabled"] is True and group["transit_encryption_enabled"] is True
    assert group["auth_token"] == "${random_password.auth.result}"
    assert group["automatic_failover_enabled"] is True and group["multi_az_enabled"] is True


def test_ecr_tags_are_immutable_and_scanned() -> None:
    repo = resources(_module("ecr"), "aws_ecr_repository")["this"]
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert block(repo, "image_scanning_configuration")["scan_on_push"] is True
    assert variables(_module("ecr"))["repositories"]["default"] == ["airflow", "job", "serving"]


def test_prod_keeps_the_safety_switches_on() -> None:
    calls = module_calls(_env("prod"))
    assert calls["rds"]["multi_az"] is True and calls["rds"]["deletion_protection"] is True
    assert calls["lake"]["force_destroy"] is False
    assert calls["network"]["single_nat_gateway"] is False
    assert calls["msk"]["auto_create_topics"] is False and calls["msk"]["min_insync_replicas"] >= 2
    assert calls["redis"]["num_cache_clusters"] >= 2


# --- IAM -------------------------------------------------------------------------------------


def test_irsa_trust_is_limited_to_named_service_accounts() -> None:
    tf = _module("irsa")
    doc = next(d for item in tf["data"] for kind, d in item.items() if kind == "aws_iam_policy_document")[
        "assume"
    ]
    statement = block(doc, "statement")
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert conditions["${var.oidc_issuer}:aud"]["test"] == "StringEquals"
    sub = conditions["${var.oidc_issuer}:sub"]
    assert sub["test"] == "StringEquals", "StringLike would allow wildcards"
    assert "system:serviceaccount:${var.namespace}:${sa}" in sub["values"]
    assert "validation" in variables(tf)["service_accounts"]


def test_workload_policies_name_their_resources() -> None:
    """Least privilege: no statement grants on Resource "*", and each workload's trust names the
    service account the k8s manifests use."""
    tf = _module("workload_iam")
    for item in tf["data"]:
        for doc in item.get("aws_iam_policy_document", {}).values():
            for statement in doc.get("statement", []):
                assert "*" not in statement.get("resources", []), statement
                assert not any(a.endswith(":*") or a == "*" for a in statement["actions"]), statement
    calls = module_calls(tf)
    assert {c["service_accounts"][0] for n, c in calls.items() if n != "airflow"} == {
        "ctloop-lander",
        "ctloop-job",
        "ctloop-serving",
        "ctloop-feast",
        "ctloop-mlflow",
    }
    base_sas = (K8S / "base" / "serviceaccounts.yaml").read_text()
    for sa in ("ctloop-lander", "ctloop-job", "ctloop-serving", "ctloop-feast", "ctloop-mlflow"):
        assert f"name: {sa}" in base_sas


# --- terraform -> kustomize ------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_outputs_feed_the_overlay(env: str) -> None:
    """The overlay's settings.env and aws.env are the terraform outputs of the same environment;
    their keys must match so the documented `terraform output -raw ... > file` works."""
    outs = outputs(_env(env))
    for output, filename in (("kustomize_settings_env", "settings.env"), ("kustomize_aws_env", "aws.env")):
        assert env_keys(outs[output]["value"]) == env_keys((K8S / "overlays" / env / filename).read_text()), (
            env,
            output,
        )
    helm = outs["airflow_helm_values"]["value"]
    for key in (
        "images",
        "config",
        "scheduler",
        "workers",
        "triggerer",
        "apiServer",
        "dagProcessor",
        "eks.amazonaws.com/role-arn",
    ):
        assert key in helm, key


def test_terraform_fmt_when_available() -> None:
    """`terraform fmt` needs no providers or network; CI machines without terraform skip it."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform not installed")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
