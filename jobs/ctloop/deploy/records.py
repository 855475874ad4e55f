"""The deploy record in the lake: every step of every deploy and rollback, with its reason.

One folder per deploy under ``_state/deploy/<pipeline>/`` (``lake.paths.deploy_record``), named by its
start time and version so a listing reads in time order; one JSON object per step (``started``,
``loaded``, ``smoke``, ``refused``, ``switched``, ``rolled_back``, ``promoted``, …), each written once.
It works the same on a folder and on S3, and outlives the switch, Airflow and the cluster.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from ctloop.lake.paths import deploy_prefix, deploy_record
from ctloop.lake.store import Lake


class DeployRecord:
    def __init__(self, lake: Lake, pipeline: str, version: str | None, action: str = "deploy") -> None:
        self.lake, self.pipeline = lake, pipeline
        now = datetime.now(UTC)
        self.deploy_id = f"{now:%Y%m%dT%H%M%SZ}-{action}-v{version or 'none'}-{secrets.token_hex(2)}"
        self.steps: list[dict[str, Any]] = []

    def step(self, kind: str, reason: str = "", **facts: Any) -> dict[str, Any]:
        record = {"deploy_id": self.deploy_id, "pipeline": self.pipeline, "step": kind, "reason": reason,
                  "at": datetime.now(UTC).isoformat(timespec="milliseconds"), **facts}
        self.lake.write(deploy_record(self.pipeline, self.deploy_id, len(self.steps), kind),
                        json.dumps(record, default=str, indent=1).encode())
        self.steps.append(record)
        return record

    @property
    def url(self) -> str:
        return self.lake.url(f"{deploy_prefix(self.pipeline)}/{self.deploy_id}")


def deploy_history(lake: Lake, pipeline: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last ``limit`` deploys of ``pipeline``, newest first, each with its steps in order."""
    prefix = f"{deploy_prefix(pipeline)}/"
    by_deploy: dict[str, list[str]] = {}
    for path in lake.list(prefix):
        deploy_id = path[len(prefix):].split("/", 1)[0]
        by_deploy.setdefault(deploy_id, []).append(path)
    out = []
    for deploy_id in sorted(by_deploy, reverse=True)[:limit]:
        steps = [json.loads(lake.read(p)) for p in sorted(by_deploy[deploy_id])]
        out.append({"deploy_id": deploy_id, "outcome": steps[-1]["step"], "reason": steps[-1].get("reason", ""),
                    "steps": steps})
    return out
