"""The README's commands, typed as a new user types them: stack up, produce, ingest, stack down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ctloop.stack.service import free_port

ROOT = Path(__file__).resolve().parents[2]
CTLOOP = Path(sys.executable).parent / "ctloop"  # the console script of the environment under test


def test_readme_quickstart_commands(tmp_path: Path) -> None:
    env = {**os.environ, "CTLOOP_STATE_DIR": str(tmp_path / "state"), "CTLOOP_BROKER_PORT": (port := str(free_port())),
           "CTLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "CTLOOP_KAFKA_SESSION_TIMEOUT_MS": "6000",
           # the broker alone, as the README's by-hand section starts it: with Airflow up, the ingest DAG would land
           # part of the events on its schedule (same consumer group: exactly once together, not in one summary)
           "CTLOOP_STACK_SERVICES": "broker"}

    def ctloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CTLOOP), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                              check=False)

    up = ctloop("stack", "up")
    assert up.returncode == 0, up.stderr
    try:
        produced = ctloop("produce", "--pipeline", "fraud", "--events", "3000", "--bad-fraction", "0.02",
                          "--drift-at", "2000", "--drift-kind", "concept", "--seed", "9")
        assert produced.returncode == 0, produced.stderr
        summary = json.loads(produced.stdout)
        assert summary["topics"]["fraud.transactions"]["total"] == 3000
        assert summary["drift"]["kind"] == "concept" and summary["drift"]["at_event"] == 2000

        landed = ctloop("ingest", "--pipeline", "fraud", "--until-caught-up")
        assert landed.returncode == 0, landed.stderr
        result = json.loads(landed.stdout)
        assert result["landed"] + result["dead_letters"] == summary["messages"]
        assert result["dead_letters"] == sum(
            n for t in summary["topics"].values() for kind, n in t["counts"].items() if kind != "valid")
        assert "[ingest fraud] assigned" in landed.stderr  # progress goes to stderr, the summary to stdout
    finally:
        assert ctloop("stack", "down").returncode == 0
