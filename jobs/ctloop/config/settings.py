"""One typed settings object for every ctloop process, fed by ``CTLOOP_*`` environment variables.

Factories and jobs take a ``Settings`` instance as a parameter instead of reading the environment
themselves, so one object decides the runtime and every environment-specific value.

Settings that can carry a password (``SECRET_SETTINGS``) are ``SecretStr``: repr, str, JSON dumps and
error messages show ``**********``; the few places that connect call ``.get_secret_value()``, and
``Settings.to_env()`` hands the real values to the processes ctloop starts.
"""

from __future__ import annotations

import difflib
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_GROUPS = ("broker", "mlflow", "airflow", "serving")
ENV_PREFIX = "CTLOOP_"
# Settings whose value may hold a password: never shown (SecretStr) in repr, errors, logs or JSON.
SECRET_SETTINGS = frozenset({"feast_redis", "mlflow_backend_store_uri", "airflow_db_uri", "serving_token",
                             "smtp_url"})
# CTLOOP_* variables that are deliberately not settings: the k8s ConfigMap (k8s/base/settings.env) and the
# serving Deployments set them for the pushgateway, serving and deploy side, and every ctloop pod gets them.
NOT_SETTINGS = frozenset({"CTLOOP_SERVING_SERVICE", "CTLOOP_SERVING_SLOT"})
# Variables Kubernetes injects into every pod for each Service of its namespace (service links), e.g. for
# ctloop-mlflow: CTLOOP_MLFLOW_SERVICE_HOST, CTLOOP_MLFLOW_SERVICE_PORT[_HTTP], CTLOOP_MLFLOW_PORT=tcp://…,
# CTLOOP_MLFLOW_PORT_5000_TCP[_PROTO|_PORT|_ADDR].
_SERVICE_LINK_NAME = re.compile(
    r"^CTLOOP_\w+?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$")
_SERVICE_LINK_PORT = re.compile(r"^CTLOOP_\w+_PORT$")
_SERVICE_LINK_URL = re.compile(r"^(tcp|udp|sctp)://[^/]+:\d+$")
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]


class SettingsError(ValueError):
    """Raised when the ``CTLOOP_*`` environment does not describe a valid configuration."""


class Settings(BaseSettings):
    """Environment-specific configuration; pipeline-specific values live in the pipeline spec."""

    # unknown CTLOOP_* variables are refused by load_settings(), which can say which setting was meant;
    # pydantic's own messages never echo an input (it may be a secret): load_settings() adds the safe ones
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True)

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
        "broker,mlflow,airflow,serving",
        description="Which embedded services `ctloop stack` manages (comma-separated; serving: the traffic switch "
                    "and its slots)."
    )
    landing: Literal["dag", "service"] | None = Field(
        None, description="Who lands events: `dag` (the ingest DAG's own lander; default of the local runtime) or "
                          "`service` (a long-running lander, the ctloop-lander Deployment; default of kubernetes). "
                          "The ingest DAG announces what landed either way.",
    )
    # MLflow
    mlflow_port: int = Field(15000, ge=1, le=65535, description="Port of the embedded MLflow tracking server.")
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking server every job logs to (default: the embedded one, http://127.0.0.1:<port>)."
    )
    mlflow_backend_store_uri: SecretStr = Field(
        SecretStr(""),
        description="Backend store of the embedded server: sqlite:///… (default under state_dir) or "
                    "postgresql+psycopg2://… (secret: may hold a password)",
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
    feast_offline_store: Literal["duckdb", "spark"] | None = Field(
        None, description="Feast offline store (point-in-time joins, materialization reads): `duckdb` (default of "
                          "the local runtime: one process, fast on a laptop's lake) or `spark` (default of the "
                          "kubernetes runtime: the lake on S3 read by Spark, which materializes too).")
    feast_redis: SecretStr = Field(
        SecretStr("127.0.0.1:6379"),
        description="Redis connection: host:port[,db=N,ssl=true,password=...] (Feast's format; secret).",
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
    airflow_db_uri: SecretStr = Field(
        SecretStr(""), description="Airflow metadata DB (SQLAlchemy URI; default sqlite under <state_dir>/airflow; "
                                   "postgresql+psycopg2://... for Postgres; secret: may hold a password).",
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
    # Serving (docs/serving.md)
    serving_port: int = Field(18090, ge=1, le=65535, description="Port of the local traffic switch in front of the "
                                                                 "blue and green serving slots.")
    serving_token_file: Path | None = Field(
        None, description="File holding the bearer token of the serving API (default <state_dir>/serving/token; "
                          "the local stack creates it once, mode 0600).")
    serving_token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the serving API; when set it wins over serving_token_file "
                                   "(Kubernetes passes it from a Secret; secret).")
    serving_fault_injection: bool = Field(
        False, description="Enable POST /admin/faults on serving slots (a share of infer calls answer 500), for "
                           "rollback tests; never in production.")
    pushgateway_url: str = Field(
        "", description="Prometheus Pushgateway the monitor job pushes its figures to (kubernetes: "
                        "http://ctloop-pushgateway:9091); unset: they are written next to its reports in the lake.")
    smtp_url: SecretStr = Field(
        SecretStr(""), description="SMTP server of e-mail alerts as an Airflow connection URI, e.g. "
                                   "smtp://user:pass@mail:587?from_email=ctloop%40example.com; the local stack sets "
                                   "the connection smtp_default from it (secret).")

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
    def _redis(cls, value: SecretStr) -> SecretStr:
        host, _, port = value.get_secret_value().split(",")[0].strip().rpartition(":")
        if not host or not port.isdigit():  # the value may hold a password: the message does not repeat it
            raise ValueError("expected host:port[,option=value...] (the value is secret and not shown)")
        return value

    @model_validator(mode="after")
    def _default_lake(self) -> Settings:
        if not self.lake_uri:
            object.__setattr__(self, "lake_uri", (self.state_dir.resolve() / "lake").as_uri())
        if not self.feast_registry:
            object.__setattr__(self, "feast_registry", str(self.state_dir.resolve() / "feast" / "registry.db"))
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"http://127.0.0.1:{self.mlflow_port}")
        if not self.mlflow_backend_store_uri.get_secret_value():
            db = self.state_dir.resolve() / "mlflow" / "mlflow.db"
            object.__setattr__(self, "mlflow_backend_store_uri", SecretStr(f"sqlite:///{db}"))
        if not self.mlflow_artifacts_destination:
            artifacts = self.state_dir.resolve() / "mlflow" / "artifacts"
            object.__setattr__(self, "mlflow_artifacts_destination", str(artifacts))
        if not self.feast_sqlite_path:
            object.__setattr__(self, "feast_sqlite_path", str(self.state_dir.resolve() / "feast" / "online.db"))
        if not self.airflow_db_uri.get_secret_value():
            object.__setattr__(self, "airflow_db_uri",
                               SecretStr(f"sqlite:///{self.state_dir.resolve() / 'airflow' / 'airflow.db'}"))
        if not self.airflow_api_url:
            object.__setattr__(self, "airflow_api_url", f"http://127.0.0.1:{self.airflow_port}")
        if self.serving_token_file is None:
            object.__setattr__(self, "serving_token_file", self.state_dir.resolve() / "serving" / "token")
        return self

    @model_validator(mode="after")
    def _runtime_defaults(self) -> Settings:
        if self.landing is None:  # one landing path per runtime (docs/ingest.md)
            object.__setattr__(self, "landing", "service" if self.runtime == "kubernetes" else "dag")
        if self.feast_offline_store is None:  # docs/features.md: chosen on measurement, per runtime
            object.__setattr__(self, "feast_offline_store", "spark" if self.runtime == "kubernetes" else "duckdb")
        return self

    @cached_property
    def stack_groups(self) -> list[str]:
        return self.stack_services.split(",")

    @cached_property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",")]

    def to_env(self) -> dict[str, str]:
        """These settings as the ``CTLOOP_*`` variables that recreate them, secrets in clear.

        For the environment of a process ctloop starts (the Airflow services, a job subprocess); never
        print or log the result. ``model_dump()`` is no substitute: it keeps secrets masked.
        """
        env = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env


def _is_service_link(name: str, value: str) -> bool:
    """A variable Kubernetes set for a Service of the pod's namespace (``enableServiceLinks``), not a person."""
    return bool(_SERVICE_LINK_NAME.match(name)
                or (_SERVICE_LINK_PORT.match(name) and _SERVICE_LINK_URL.match(value.strip())))


def _did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean CTLOOP_X?)`` for the closest known name, compared without the common prefix."""
    prefix = ENV_PREFIX.lower() if name.lower().startswith(ENV_PREFIX.lower()) else ""
    stripped = {k.lower()[len(prefix):]: k for k in known}
    close = difflib.get_close_matches(name.lower()[len(prefix):], list(stripped), n=1, cutoff=0.6)
    return f" (did you mean {stripped[close[0]]}?)" if close else ""


def load_settings(**overrides: object) -> Settings:
    """Read the environment into ``Settings``; errors name the ``CTLOOP_*`` variable at fault.

    An unknown ``CTLOOP_*`` variable is an error, not a warning::

        CTLOOP_KAFKA_BOOTSTRAPS: not a ctloop setting (did you mean CTLOOP_KAFKA_BOOTSTRAP?)

    Why fail: a mistyped name leaves the setting at its default, and the defaults are the local
    ones: a pod would write to a lake folder on its own disk, or talk to the embedded broker's
    address, and only look healthy. Failing at start-up costs one restart; a warning in a pod log
    costs the data. What is legitimately ``CTLOOP_*`` without being a setting is allowed explicitly:
    ``NOT_SETTINGS`` (read by the pushgateway, serving and deploy side, shipped in the same ConfigMap)
    and the service-link variables Kubernetes adds for every Service named ``ctloop-…`` in the
    namespace (a service link ``CTLOOP_MLFLOW_PORT=tcp://…`` is also not taken for the setting
    ``mlflow_port``). Because of this, a new setting must reach the images before its variable is
    added to the shared ConfigMap. Unknown keyword ``overrides`` are refused the same way.
    """
    from pydantic import ValidationError

    fields = Settings.model_fields
    known = [f"{ENV_PREFIX}{name.upper()}" for name in fields]
    unknown = [f"{key}: not a ctloop setting{_did_you_mean(key, list(fields))}"
               for key in overrides if key not in fields]
    for name, value in sorted(os.environ.items()):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        if _is_service_link(upper, value):
            field = upper.removeprefix(ENV_PREFIX).lower()
            if field in fields and field not in overrides:  # e.g. mlflow_port and the link of ctloop-mlflow
                overrides[field] = fields[field].get_default(call_default_factory=True)
        elif upper not in known:
            unknown.append(f"{name}: not a ctloop setting{_did_you_mean(name, known)}")
    if unknown:
        raise SettingsError("unknown settings:\n  " + "\n  ".join(unknown))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            shown = "" if field in SECRET_SETTINGS else f" (got {err.get('input')!r})"  # secrets are never shown
            lines.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
