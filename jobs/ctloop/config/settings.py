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

STACK_GROUPS = ("broker", "mlflow", "airflow")
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]


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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka transport; MSK with IAM auth is SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*; AWS_MSK_IAM signs with the pod's IAM role."
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, le=300_000,
        description="Consumer-group session timeout; a dead lander's partitions move after it.",
    )
    kafka_connect_timeout_s: float = Field(
        120.0, gt=0, description="How long a job retries an unreachable broker before it gives up."
    )
    broker_port: int = Field(19092, ge=1, le=65535, description="Port of the embedded Tansu broker.")
    pipelines_dir: Path = Field(Path("pipelines"), description="Folder holding the pipeline specs.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics of long-running jobs (the lander) on this port."
    )
    stack_services: str = Field(
        "broker,mlflow,airflow", description="Which embedded services `ctloop stack` manages (comma-separated)."
    )
    # MLflow
    mlflow_port: int = Field(15000, ge=1, le=65535, description="Port of the embedded MLflow tracking server.")
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking server every job logs to (default: the embedded one, http://127.0.0.1:<port>)."
    )
    mlflow_backend_store_uri: str = Field(
        "", description="Backend store of the embedded server: sqlite:///… (default under state_dir) or postgresql+psycopg2://…"
    )
    mlflow_artifacts_destination: str = Field(
        "", description="Where the embedded server keeps artifacts: a folder (default under state_dir) or s3://…"
    )
    mlflow_experiment: str = Field("ctloop-{pipeline}", description="Experiment name; `{pipeline}` is replaced.")
    mixed_precision: bool = Field(False, description="Train in mixed_float16 when a GPU is present (ignored on CPU).")
    actor: str = Field("", description="Who registry alias moves are recorded as (default: Airflow run or user@host).")
    code_version: str = Field("", description="Code version tagged on runs (default: git commit, else package version)")
    spark_master: str = Field("local[*]", description="Spark master URL for the Spark jobs (any master Spark accepts).")
    spark_shuffle_partitions: int = Field(8, ge=1, le=100_000, description="spark.sql.shuffle.partitions of the jobs.")
    feast_project: str = Field("ctloop", pattern=r"^[a-z][a-z0-9_]*$", description="Feast project name.")
    feast_online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store type.")
    feast_redis: str = Field(
        "127.0.0.1:6379", description="Redis connection: host:port[,db=N,ssl=true,password=...] (Feast's format)."
    )
    feast_registry: str = Field(
        "", description="Feast registry path or s3:// URI (default: <state_dir>/feast/registry.db)."
    )
    feast_sqlite_path: str = Field("", description="SQLite online store file (default: <state_dir>/feast/online.db).")
    # Airflow
    airflow_port: int = Field(
        18080, ge=1, le=65530,
        description="Port of the local Airflow api-server (UI and REST); the next three serve its internal health "
                    "and log endpoints.",
    )
    airflow_db_uri: str = Field(
        "", description="Airflow metadata DB (SQLAlchemy URI; default sqlite under <state_dir>/airflow; "
                        "postgresql+psycopg2://... for Postgres).",
    )
    airflow_parallelism: int = Field(4, ge=1, le=64, description="Tasks the local Airflow runs at once.")
    airflow_api_url: str = Field(
        "", description="Airflow's REST API base URL for clients (default http://127.0.0.1:<airflow_port>)."
    )
    job_image: str = Field(
        "", description="Image of job pods (kubernetes runtime); empty: the image of the pod template."
    )
    k8s_namespace: str = Field("ctloop", description="Namespace of the job pods and their pod templates.")
    job_pod_template: str = Field("ctloop-job", description="PodTemplate of CPU job pods.")
    training_pod_template: str = Field("ctloop-training", description="PodTemplate of GPU training pods.")
    deploy_pod_template: str = Field("ctloop-deploy", description="PodTemplate of the blue-green deploy step.")
    job_secrets: str = Field(
        "", description="Comma-separated Secrets added to job pods as environment (envFrom), e.g. credentials."
    )
    job_startup_timeout_s: int = Field(
        900, ge=30, description="How long a job pod may stay Pending (GPU nodes scale up from zero)."
    )
    retrain_topic: str = Field(
        "ctloop.retrain-requests", pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Kafka topic of retrain requests ({pipeline, reason, requested_by}).",
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

    @field_validator("stack_services")
    @classmethod
    def _stack_services(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - set(STACK_GROUPS))
        if unknown or not names:
            raise ValueError(f"expected a comma-separated subset of {', '.join(STACK_GROUPS)}, got {value!r}")
        return ",".join(names)

    @field_validator("feast_redis")
    @classmethod
    def _redis(cls, value: str) -> str:
        host, _, port = value.split(",")[0].strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port[,option=value...], got {value.split(',')[0]!r}")
        return value

    @model_validator(mode="after")
    def _default_lake(self) -> Settings:
        if not self.lake_uri:
            object.__setattr__(self, "lake_uri", (self.state_dir.resolve() / "lake").as_uri())
        if not self.feast_registry:
            object.__setattr__(self, "feast_registry", str(self.state_dir.resolve() / "feast" / "registry.db"))
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"http://127.0.0.1:{self.mlflow_port}")
        if not self.mlflow_backend_store_uri:
            db = self.state_dir.resolve() / "mlflow" / "mlflow.db"
            object.__setattr__(self, "mlflow_backend_store_uri", f"sqlite:///{db}")
        if not self.mlflow_artifacts_destination:
            artifacts = self.state_dir.resolve() / "mlflow" / "artifacts"
            object.__setattr__(self, "mlflow_artifacts_destination", str(artifacts))
        if not self.feast_sqlite_path:
            object.__setattr__(self, "feast_sqlite_path", str(self.state_dir.resolve() / "feast" / "online.db"))
        if not self.airflow_db_uri:
            object.__setattr__(self, "airflow_db_uri",
                               f"sqlite:///{self.state_dir.resolve() / 'airflow' / 'airflow.db'}")
        if not self.airflow_api_url:
            object.__setattr__(self, "airflow_api_url", f"http://127.0.0.1:{self.airflow_port}")
        return self

    @cached_property
    def stack_groups(self) -> list[str]:
        return self.stack_services.split(",")

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
