"""One typed settings object for every ctloop process, fed by ``CTLOOP_*`` environment variables.

Factories and jobs take a ``Settings`` instance as a parameter instead of reading the environment
themselves, so one object decides the runtime and every environment-specific value.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Raised when the ``CTLOOP_*`` environment does not describe a valid configuration."""


class Settings(BaseSettings):
    """Environment-specific configuration; pipeline-specific values live in the pipeline spec."""

    model_config = SettingsConfigDict(env_prefix="CTLOOP_", extra="ignore", frozen=True)

    runtime: Literal["local", "kubernetes"] = Field(
        "local", description="`local` runs jobs as subprocesses on this machine; `kubernetes` as pods."
    )
    state_dir: Path = Field(
        Path(".state"), description="Where the embedded stack keeps pids, logs, data and checkpoints."
    )
    lake_uri: str = Field(
        "", description="Root of the data lake: file:///path or s3://bucket/prefix (default: <state_dir>/lake)."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); unset for AWS itself."
    )
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Comma-separated Kafka bootstrap servers.")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, le=300_000, description="Consumer-group session timeout; a dead lander's partitions move after it."
    )
    kafka_connect_timeout_s: float = Field(
        120.0, gt=0, description="How long a job retries an unreachable broker before it gives up."
    )
    broker_port: int = Field(19092, ge=1, le=65535, description="Port of the embedded Tansu broker.")
    pipelines_dir: Path = Field(Path("pipelines"), description="Folder holding the pipeline specs.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics of long-running jobs (the lander) on this port."
    )

    @field_validator("lake_uri")
    @classmethod
    def _lake_scheme(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://")):
            raise ValueError(f"expected a file:// or s3:// URI, got {value!r}")
        return value.rstrip("/")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @model_validator(mode="after")
    def _default_lake(self) -> Settings:
        if not self.lake_uri:
            object.__setattr__(self, "lake_uri", (self.state_dir.resolve() / "lake").as_uri())
        return self

    @cached_property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",")]


def load_settings(**overrides: object) -> Settings:
    """Read the environment into ``Settings``; errors name the ``CTLOOP_*`` variable at fault."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"CTLOOP_{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
