"""The three images, checked statically: multi-stage, pinned bases, a non-root user, no secret
in the build, a tight build context, and versions that agree with the locked environment."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest
from infra_helpers import DOCKER, REPO

IMAGES = ("airflow", "job", "serving")
SECRETISH = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)")


def instructions(image: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (DOCKER / image / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages(image: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(image):
        if ins[0] == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_multi_stage_with_pinned_bases(image: str) -> None:
    names: set[str] = set()
    froms = [args for op, args in instructions(image) if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for args in froms:
        ref, *rest = args.split()
        if ref in names:
            continue
        repo, _, tag = ref.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{image}: unpinned base {ref}"
        assert re.search(r"\d", tag), f"{image}: tag without a version: {ref}"
        if rest and rest[0].upper() == "AS":
            names.add(rest[1])


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_non_root(image: str) -> None:
    final = stages(image)[-1]
    users = [args for op, args in final if op == "USER"]
    assert users, f"{image}: final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    if user.isdigit():
        assert int(user) >= 10000
        assert any(op == "RUN" and f"--uid {user}" in args for op, args in final), (
            "the uid is created in the image"
        )


@pytest.mark.parametrize("image", IMAGES)
def test_no_secret_in_the_build(image: str) -> None:
    for op, args in instructions(image):
        assert op != "ADD", "COPY only: ADD fetches URLs and unpacks archives implicitly"
        if op in {"ENV", "ARG", "LABEL"}:
            assert not SECRETISH.search(args), f"{image}: {op} {args}"
        if op == "RUN":
            assert "--mount=type=secret" not in args or "id=" in args
            assert not re.search(r"(?i)(aws_secret_access_key|password)=", args), args


@pytest.mark.parametrize("image", IMAGES)
def test_uv_is_pinned_and_the_lock_is_honoured(image: str) -> None:
    ins = instructions(image)
    uv_refs = {args.split()[0] for op, args in ins if op == "FROM" and "astral-sh/uv" in args}
    assert uv_refs == {"ghcr.io/astral-sh/uv:0.13.9"}
    runs = " ".join(args for op, args in ins if op == "RUN")
    if image == "airflow":
        assert "uv export --frozen --no-dev" in runs and "--constraint" in runs
    else:
        assert "uv sync --frozen --no-dev --no-install-project" in runs
        assert "uv sync --frozen --no-dev --no-editable" in runs


def test_airflow_image_stays_light() -> None:
    """DAG parsing must not need the heavy stack: the Airflow image installs the ctloop wheel
    without dependencies plus Airflow-side packages only."""
    assert stages("airflow")[-1][0][1].startswith("apache/airflow:3.3.2-python3.11")
    runs = " ".join(args for op, args in stages("airflow")[-1] if op == "RUN")
    assert "--no-deps" in runs and "apache-airflow-providers-cncf-kubernetes" in runs
    for heavy in ("tensorflow", "pyspark", "feast", "mlflow", "evidently", "great-expectations", "uv sync"):
        assert heavy not in runs, heavy
    copies = [args for op, args in stages("airflow")[-1] if op == "COPY"]
    assert any("dags/" in c and "/opt/airflow/dags" in c for c in copies)
    assert any("plugins/" in c and "/opt/airflow/plugins" in c for c in copies)
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    airflow = next(p["version"] for p in lock["package"] if p["name"] == "apache-airflow")
    assert f'"apache-airflow=={airflow}"' in runs, "the image's Airflow must be the locked Airflow"


def test_job_image_has_gpu_base_java_and_matching_s3a_jars() -> None:
    ins = instructions("job")
    final_from = [args for op, args in ins if op == "FROM"][-1]
    assert final_from.startswith("nvidia/cuda:12.") and "cudnn-runtime" in final_from
    text = (DOCKER / "job" / "Dockerfile").read_text()
    assert "openjdk-17-jre-headless" in text
    hadoop_aws = re.search(r"ARG HADOOP_AWS_VERSION=(\S+)", text).group(1)
    bundle = re.search(r"ARG AWS_SDK_BUNDLE_VERSION=(\S+)", text).group(1)
    assert "hadoop-aws-${HADOOP_AWS_VERSION}.jar" in text and "bundle-${AWS_SDK_BUNDLE_VERSION}.jar" in text
    assert "sha1sum --check" in text
    assert re.fullmatch(r"2\.\d+\.\d+", bundle)
    assert "pyspark/jars/" in text
    jars = sorted((REPO / ".venv").glob("lib/python3.*/site-packages/pyspark/jars/hadoop-client-api-*.jar"))
    if not jars:
        pytest.skip("pyspark is not installed in .venv; cannot read its Hadoop version")
    bundled = re.search(r"hadoop-client-api-(.+)\.jar", jars[0].name).group(1)
    assert hadoop_aws == bundled, f"hadoop-aws {hadoop_aws} must match pyspark's Hadoop {bundled}"


# --- build context ---------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern matches a path or
    any of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if pat.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pat[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_is_an_allow_list() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert patterns[0] == "*"
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "terraform/envs/prod/terraform.tfstate",
        "tools/checkov/.venv/x",
        "jobs/ctloop/.env",
        "dags/__pycache__/x.pyc",
        "k8s/base/kustomization.yaml",
        "docs/deploy-aws.md",
        "tests/infra/conftest.py",
        "secrets.pem",
    ):
        assert _ignored(path, patterns), path
    for path in (
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "jobs/ctloop/cli.py",
        "dags/x.py",
        "plugins/x.py",
        "pipelines/fraud.yaml",
        "feature_repo/feature_store.yaml",
    ):
        assert not _ignored(path, patterns), path


@pytest.mark.parametrize("image", IMAGES)
def test_copy_sources_are_in_the_build_context(image: str) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for op, args in instructions(image):
        if op != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert not _ignored(src.rstrip("/"), patterns), (
                f"{image}: COPY {src} is excluded by .dockerignore"
            )
            assert (REPO / src).exists(), f"{image}: COPY {src}: no such path in a clean clone"
