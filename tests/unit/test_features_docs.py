"""docs/features.md documents every feature job command (spec fields: test_docs_match_code.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_job_commands_are_documented() -> None:
    doc = (ROOT / "docs" / "features.md").read_text()
    for command in ("ctloop spark clean", "ctloop spark features", "ctloop materialize", "ctloop training-set",
                    "feast plan", "feast apply"):
        assert command in doc, command
