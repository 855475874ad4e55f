"""Fixtures for the static infrastructure checks: rendered overlays and one checkov run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The test modules import infra_helpers from this folder, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_helpers import K8S, OVERLAYS, REPO, parse_objects, render


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    """`kustomize build` output of every overlay."""
    return {env: render(K8S / "overlays" / env) for env in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {env: parse_objects(text) for env, text in rendered_text.items()}


@pytest.fixture(scope="session")
def checkov_reports(
    rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """One checkov run over terraform/, k8s/, docker/ and the rendered overlays.

    checkov lives in its own locked tool project (tools/checkov): it cannot be resolved together
    with Airflow in the project environment. The four trees are staged under one root so that a
    single run yields one JSON report per framework. Returns {framework: report}.
    """
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to run the pinned checkov (tools/checkov)")
    root = tmp_path_factory.mktemp("checkov-scan")
    for name in ("terraform", "k8s", "docker"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    (root / "rendered-overlays").mkdir()
    for env, text in rendered_text.items():
        (root / "rendered-overlays" / f"{env}.yaml").write_text(text)
    cmd = [
        uv,
        "run",
        "--project",
        str(REPO / "tools" / "checkov"),
        "--frozen",
        "--quiet",
        "checkov",
        "--config-file",
        str(REPO / "tools" / "checkov" / ".checkov.yaml"),
        "--directory",
        str(root),
        "--output",
        "json",
    ]
    # Never let an outer environment redirect uv to the project's own virtualenv.
    env = {k: v for k, v in os.environ.items() if k not in {"UV_PROJECT_ENVIRONMENT", "VIRTUAL_ENV"}}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode not in (0, 1):  # 1 means failed checks, which the tests list in detail
        pytest.fail(f"checkov did not run (exit {result.returncode}):\n{result.stderr[-4000:]}")
    data = json.loads(result.stdout)
    reports = data if isinstance(data, list) else [data]
    return {report["check_type"]: report for report in reports}
