"""One monitoring check's verdict: the shape ``ctloop monitor`` prints and the monitor DAG reads.

A check is named by its kind first (``drift…``, ``quality…``, ``performance…``) because the DAG and
the retrain policy route on that prefix; ``evidence`` is what a person (and the retrain run's note)
needs to see why: statistics, the drifted features or slices, report links.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.startswith(("drift", "quality", "performance")):
            raise ValueError(f"check name {self.name!r} must start with drift, quality or performance")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
