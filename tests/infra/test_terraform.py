"""Terraform, checked statically (no provider download, no AWS account): every file parses,
modules follow the modules/<name>/{main,variables,outputs,versions}.tf layout, variables are
typed and described, providers are pinned, the platform module composes the building blocks,
environments call it over a remote backend, and the security-relevant settings are what the
design says."""

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
REQUIRED_MODULES = {"network", "lake", "eks", "msk", "rds", "redis", "ecr", "irsa", "platform"}
# The composition module: the one module the environments call; it calls every other module.
PLATFORM = "platform"
# Modules used inside other modules rather than by the platform directly.
NESTED_MODULES = {"irsa": ["workload_iam"], "kms_key": ["network", "lake", "eks", "msk", "rds", "redis", "ecr"]}
# The building blocks whose key also encrypts their CloudWatch log group.
LOGGING_MODULES = {"network", "eks", "msk", "redis"}


def _module(name: str) -> dict[str, list[Any]]:
    return load_tf_dir(TERRAFORM / "modules" / name)


def _env(name: str) -> dict[str, list[Any]]:
    return load_tf_dir(TERRAFORM / "envs" / name)


def _platform_call(env: str) -> dict[str, Any]:
    """The arguments an environment passes to the platform module (its sizes and switches)."""
    return module_calls(_env(env))[PLATFORM]


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
    assert {n: body["source"] for n, body in calls.items()} == {PLATFORM: f"../../modules/{PLATFORM}"}
    assert not tf.get("resource") and not tf.get("data"), "environments call the platform, they declare nothing"


def test_platform_composes_every_module() -> None:
    tf = _module(PLATFORM)
    sources = {body["source"] for body in module_calls(tf).values()}
    assert all(s.startswith("../") for s in sources), sources
    composed = {s.removeprefix("../") for s in sources}
    assert composed == set(MODULES) - {PLATFORM, *NESTED_MODULES}
    # The rest are used inside the building blocks; nothing is left unused.
    reachable, todo = set(), [PLATFORM]
    while todo:
        for body in module_calls(_module(todo.pop())).values():
            name = body["source"].removeprefix("../")
            if name not in reachable:
                reachable.add(name)
                todo.append(name)
    assert reachable | {PLATFORM} == set(MODULES)
    for nested, users in NESTED_MODULES.items():
        for user in users:
            assert f"../{nested}" in {b["source"] for b in module_calls(_module(user)).values()}, (nested, user)
    assert not tf.get("resource"), "the platform composes modules, it does not declare resources"


def test_environments_compose_the_same_modules() -> None:
    assert set(module_calls(_env("dev"))) == set(module_calls(_env("prod")))
    # Both set the same platform knobs, and every knob without a default.
    assert set(_platform_call("dev")) == set(_platform_call("prod"))
    required = {n for n, v in variables(_module(PLATFORM)).items() if "default" not in v}
    assert required <= set(_platform_call("dev")), required - set(_platform_call("dev"))
    assert {n: v.get("type") for n, v in variables(_env("dev")).items()} == {
        n: v.get("type") for n, v in variables(_env("prod")).items()
    }


# --- encryption keys and logs ----------------------------------------------------------------


def test_keys_rotate_and_log_groups_are_encrypted_with_a_key_scoped_to_them() -> None:
    tf = _module("kms_key")
    key = resources(tf, "aws_kms_key")["this"]
    assert key["enable_key_rotation"] is True
    statements = tf["locals"][0]
    assert statements["account_administers"]["Principal"] == {
        "AWS": "arn:${local.partition}:iam::${local.account_id}:root"
    }
    logs_use = statements["cloudwatch_logs_use"]
    assert logs_use["Principal"] == {"Service": "logs.${local.region}.amazonaws.com"}
    condition = logs_use["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert condition.endswith(':log-group:${coalesce(var.log_group_name, "-")}'), (
        "CloudWatch Logs may use the key for this group only"
    )
    assert "local.cloudwatch_logs_use" in key["policy"] and "local.with_logs" in key["policy"]
    group = resources(tf, "aws_cloudwatch_log_group")["this"]
    assert group["kms_key_id"] == "${aws_kms_key.this.arn}" and group["name"] == "${var.log_group_name}"
    retention = variables(tf)["log_retention_days"]
    assert retention["default"] >= 365
    assert block(retention, "validation")["condition"] == "${var.log_retention_days >= 365}", (
        "a year of logs is enforced at plan time, whatever each caller passes"
    )
    for user in NESTED_MODULES["kms_key"]:
        user_tf = _module(user)
        assert not resources(user_tf, "aws_kms_key"), f"{user}: keys come from modules/kms_key"
        assert not resources(user_tf, "aws_cloudwatch_log_group"), f"{user}: log groups come from modules/kms_key"
        call = module_calls(user_tf)["kms"]
        assert call["source"] == "../kms_key" and call["description"], user
        if user in LOGGING_MODULES:
            assert call["log_retention_days"].startswith("${var.") and call["log_group_name"], user


# --- EKS -------------------------------------------------------------------------------------


def test_gpu_node_group_is_tainted_and_labelled() -> None:
    tf = _module("eks")
    taint_local = tf["locals"][0]["gpu_taint"]
    assert taint_local == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    # One node group per pool; each pool's AMI, labels and taints come from local.node_pools.
    pools = tf["locals"][0]["node_pools"]
    assert set(pools) == {"cpu", "gpu"}
    gpu, cpu = pools["gpu"], pools["cpu"]
    group = resources(tf, "aws_eks_node_group")["this"]
    assert group["for_each"] == "${local.node_pools}"
    assert group["ami_type"] == "${each.value.ami_type}" and group["labels"] == "${each.value.labels}"
    taint = block(block(group, "dynamic"), "taint")
    assert taint["for_each"] == "${each.value.taints}"
    assert block(taint, "content") == {
        "key": "${taint.value.key}",
        "value": "${taint.value.value}",
        "effect": "${taint.value.effect}",
    }
    assert gpu["taints"] == ["${local.gpu_taint}"]
    assert "NVIDIA" in gpu["ami_type"] and "NVIDIA" not in cpu["ami_type"]
    assert gpu["labels"]["ctloop.io/node-pool"] == "gpu"
    assert cpu["labels"]["ctloop.io/node-pool"] == "cpu" and cpu["taints"] == []
    assert gpu["tags"]["k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"] == "true:NoSchedule"
    launch_template = resources(tf, "aws_launch_template")["this"]
    assert launch_template["for_each"] == "${local.node_pools}"
    assert block(group, "launch_template")["id"] == "${aws_launch_template.this[each.key].id}"


def test_eks_hardening_and_version() -> None:
    tf = _module("eks")
    cluster = resources(tf, "aws_eks_cluster")["this"]
    assert cluster["version"] == "${var.kubernetes_version}"
    assert variables(tf)["kubernetes_version"]["default"] == KUBERNETES_VERSION.rsplit(".", 1)[0]
    minor = KUBERNETES_VERSION.rsplit(".", 1)[0]
    platform = _module(PLATFORM)
    assert module_calls(platform)["eks"]["kubernetes_version"] == "${var.kubernetes_version}"
    assert variables(platform)["kubernetes_version"]["default"] == minor
    for env in ("dev", "prod"):
        assert _platform_call(env).get("kubernetes_version", minor) == minor, env
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
    # Versioning, the public access block, bucket-owner objects and the TLS-only policy are shared
    # by the lake and its access-log bucket: one for_each over both.
    buckets = tf["locals"][0]["buckets"]
    assert buckets == {"lake": "${aws_s3_bucket.lake}", "logs": "${aws_s3_bucket.logs}"}
    versioning = resources(tf, "aws_s3_bucket_versioning")["this"]
    assert versioning["for_each"] == "${local.buckets}" and versioning["bucket"] == "${each.value.id}"
    assert block(versioning, "versioning_configuration")["status"] == "Enabled"
    sse = block(
        block(resources(tf, "aws_s3_bucket_server_side_encryption_configuration")["lake"], "rule"),
        "apply_server_side_encryption_by_default",
    )
    assert sse["sse_algorithm"] == "aws:kms" and sse["kms_master_key_id"] == "${module.kms.key_arn}"
    pab = resources(tf, "aws_s3_bucket_public_access_block")["this"]
    assert pab["for_each"] == "${local.buckets}" and pab["bucket"] == "${each.value.id}"
    assert all(
        pab[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    ownership = resources(tf, "aws_s3_bucket_ownership_controls")["this"]
    assert ownership["for_each"] == "${local.buckets}"
    assert block(ownership, "rule")["object_ownership"] == "BucketOwnerEnforced"
    rules = resources(tf, "aws_s3_bucket_lifecycle_configuration")["lake"]["rule"]
    ids = {r["id"] for r in rules}
    assert {"abort-incomplete-uploads", "expire-noncurrent-versions", "tier-raw"} <= ids
    assert all(r["status"] == "Enabled" for r in rules)
    assert resources(tf, "aws_s3_bucket_logging")["lake"]["target_bucket"] == "${aws_s3_bucket.logs.id}"
    docs = {n: d for item in tf["data"] for n, d in item.get("aws_iam_policy_document", {}).items()}
    tls_only = docs["tls_only"]
    assert tls_only["for_each"] == "${local.buckets}"
    statement = block(tls_only, "statement")
    assert statement["resources"] == ["${each.value.arn}", "${each.value.arn}/*"]
    assert (
        statement["effect"] == "Deny" and block(statement, "condition")["variable"] == "aws:SecureTransport"
    )
    # Both bucket policies carry the TLS-only statement.
    policies = resources(tf, "aws_s3_bucket_policy")
    assert policies["lake"]["policy"] == '${data.aws_iam_policy_document.tls_only["lake"].json}'
    assert policies["logs"]["policy"] == "${data.aws_iam_policy_document.logs_delivery.json}"
    assert docs["logs_delivery"]["source_policy_documents"] == [
        '${data.aws_iam_policy_document.tls_only["logs"].json}'
    ]
    for name in ("lake", "logs"):
        assert module_calls(tf)["kms"]["source"] == "../kms_key" and resources(tf, "aws_s3_bucket")[name]
        assert resources(tf, "aws_s3_bucket_policy")[name]["bucket"] == f"${{aws_s3_bucket.{name}.id}}"


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
    prod = _platform_call("prod")
    assert prod["rds"]["multi_az"] is True and prod["rds"]["deletion_protection"] is True
    assert prod["lake_force_destroy"] is False
    assert prod["single_nat_gateway"] is False
    assert prod["msk"]["auto_create_topics"] is False and prod["msk"]["min_insync_replicas"] >= 2
    assert prod["redis"]["num_cache_clusters"] >= 2
    # ... and the platform hands each switch to the module that enforces it, unchanged.
    calls = module_calls(_module(PLATFORM))
    assert calls["rds"]["multi_az"] == "${var.rds.multi_az}"
    assert calls["rds"]["deletion_protection"] == "${var.rds.deletion_protection}"
    assert calls["lake"]["force_destroy"] == "${var.lake_force_destroy}"
    assert calls["network"]["single_nat_gateway"] == "${var.single_nat_gateway}"
    assert calls["msk"]["auto_create_topics"] == "${var.msk.auto_create_topics}"
    assert calls["msk"]["min_insync_replicas"] == "${var.msk.min_insync_replicas}"
    assert calls["redis"]["num_cache_clusters"] == "${var.redis.num_cache_clusters}"
    # Left out, the platform's switches fall back to the safe side.
    defaults = {n: v.get("default") for n, v in variables(_module(PLATFORM)).items()}
    assert defaults["lake_force_destroy"] is False and defaults["single_nat_gateway"] is False


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


OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
LIST_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}


def test_workload_policies_name_their_resources() -> None:
    """Least privilege: no statement grants on Resource "*", and each workload's trust names the
    service account the k8s manifests use."""
    tf = _module("workload_iam")

    def no_wildcard_action(actions: list[str]) -> bool:
        return not any(a.endswith(":*") or a == "*" for a in actions)

    docs = {n: d for item in tf["data"] for n, d in item.get("aws_iam_policy_document", {}).items()}
    for name, doc in docs.items():
        if name == "workload":  # built from local.workloads, checked below
            continue
        for statement in doc.get("statement", []):
            assert "*" not in statement.get("resources", []), statement
            assert no_wildcard_action(statement["actions"]), statement
    # The per-workload policy: objects only under the workload's prefixes of the lake bucket, and
    # ListBucket only with s3:prefix restricted to the same prefixes.
    workload_doc = docs["workload"]
    assert workload_doc["for_each"] == "${local.workloads}"
    objects = block(workload_doc, "statement")
    assert objects["actions"] == "${each.value.object_actions}"
    assert objects["resources"] == '${[for prefix in each.value.prefixes : "${var.lake_bucket_arn}/${prefix}*"]}'
    listing = block(block(workload_doc, "dynamic"), "statement")["content"][0]
    assert listing["resources"] == ["${var.lake_bucket_arn}"]
    condition = block(listing, "condition")
    assert condition["test"] == "StringLike" and condition["variable"] == "s3:prefix"
    assert condition["values"] == '${[for prefix in statement.value.prefixes : "${prefix}*"]}'
    workloads = tf["locals"][0]["workloads"]
    assert set(workloads) == {"lander", "job", "serving", "feast", "mlflow", "airflow"}
    for name, workload in workloads.items():
        assert workload["prefixes"], name
        for prefix in workload["prefixes"]:
            assert prefix.endswith("/") and prefix.strip("/"), (name, prefix)  # never the whole bucket
        # An allowlist, so no statement built from this table can escalate privileges or reach
        # beyond the bucket (checkov cannot expand the for_each document to check that itself).
        assert workload["object_actions"] and set(workload["object_actions"]) <= OBJECT_ACTIONS, name
        assert set(workload["list_actions"]) <= LIST_ACTIONS, name
        assert set(workload["kafka"]) <= {"read", "write"}, name
    roles = module_calls(tf)["role"]
    assert roles["for_each"] == "${local.workloads}"
    assert roles["service_accounts"] == "${each.value.service_accounts}"
    assert roles["policy_json"] == "${data.aws_iam_policy_document.workload[each.key].json}"
    assert {w["service_accounts"][0] for n, w in workloads.items() if n != "airflow"} == {
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
    their keys must match so the documented `terraform output -raw ... > file` works. The
    environment passes every platform output through under the same name."""
    env_outs = outputs(_env(env))
    outs = outputs(_module(PLATFORM))
    assert {n: o["value"] for n, o in env_outs.items()} == {n: f"${{module.{PLATFORM}.{n}}}" for n in outs}
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
