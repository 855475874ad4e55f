"""Spec and settings errors name the file, the field and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ctloop.config.settings import SettingsError, load_settings
from ctloop.config.spec import SpecError, load_spec

from tests.conftest import REFERENCE_SPEC, make_pipeline


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(REFERENCE_SPEC.read_text())
    mutate(data)
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_reference_spec_loads() -> None:
    spec = load_spec("fraud", REFERENCE_SPEC.parent)
    assert spec.primary == "transactions"
    assert spec.events["transactions"].fields["event_time"].type == "timestamp"
    assert spec.ingest.consumer_group == "ctloop-lander-fraud"
    assert len(spec.spec_hash) == 16


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["events"]["transactions"]["fields"]["amount"].update(type="dobule"),
     "events.transactions.fields.amount.type: Input should be 'string', 'int', 'double', 'bool' or 'timestamp'; "
     "got 'dobule'"),
    (lambda d: d["events"]["transactions"].update(time_field="amount"),
     "events.transactions: time_field 'amount' must have type timestamp"),
    (lambda d: d["events"]["transactions"].update(key="pan"),
     "events.transactions: key 'pan' is not one of the fields"),
    (lambda d: d["ingest"].update(flush_recrods=10),
     "ingest.flush_recrods: unknown field"),
    (lambda d: d["ingest"].update(flush_records=0),
     "ingest.flush_records: Input should be greater than 0; got 0"),
    (lambda d: d.pop("primary"), "primary: required field is missing"),
    (lambda d: d["labels"].update(events="refunds"), "labels.events 'refunds' is not one of the events"),
    (lambda d: d["events"]["transactions"]["fields"]["amount"].update(allowed=["1"]),
     "events.transactions.fields.amount: 'allowed' and 'max_length' apply to string fields, not double"),
    (lambda d: d.update(name="other"), "name: expected 'fraud' (the file's name), got 'other'"),
])
def test_spec_errors_name_file_and_field(tmp_path: Path, mutate, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec("fraud", _write(tmp_path, mutate))
    assert str(tmp_path / "fraud.yaml") in str(err.value)
    assert expected in str(err.value)


def test_unknown_pipeline_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no such pipeline spec \(known pipelines in .*: fraud\)"):
        load_spec("frod", REFERENCE_SPEC.parent)
    (tmp_path / "fraud.yaml").write_text("name: [unclosed")
    with pytest.raises(SpecError, match="fraud.yaml: not valid YAML"):
        load_spec("fraud", tmp_path)


def test_second_pipeline_is_only_a_spec(tmp_path: Path) -> None:
    pipelines, suffix = make_pipeline(tmp_path, name="fraud_eu")
    spec = load_spec("fraud_eu", pipelines)
    assert spec.events["transactions"].topic.endswith(suffix)


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTLOOP_RUNTIME", "k8s")
    monkeypatch.setenv("CTLOOP_LAKE_URI", "hdfs://nn/lake")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "CTLOOP_RUNTIME: Input should be 'local' or 'kubernetes' (got 'k8s')" in str(err.value)
    assert "CTLOOP_LAKE_URI: Value error, expected a file:// or s3:// URI, got 'hdfs://nn/lake'" in str(err.value)


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CTLOOP_STATE_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.runtime == "local"
    assert settings.lake_uri == (tmp_path / "lake").as_uri()
    monkeypatch.setenv("CTLOOP_LAKE_URI", "s3://bucket/prefix/")
    monkeypatch.setenv("CTLOOP_KAFKA_BOOTSTRAP", "a:9092,b:9093")
    settings = load_settings()
    assert settings.lake_uri == "s3://bucket/prefix"
    assert settings.bootstrap_servers == ["a:9092", "b:9093"]


def test_cli_reports_spec_error_and_exits_2(tmp_path: Path) -> None:
    _write(tmp_path, lambda d: d["events"]["chargebacks"].update(partitions=-1))
    proc = subprocess.run([sys.executable, "-m", "ctloop.cli", "spec", "fraud"], capture_output=True, text=True,
                          env={"CTLOOP_PIPELINES_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "events.chargebacks.partitions: Input should be greater than or equal to 1; got -1" in proc.stderr


def test_kafka_security_settings_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """MSK with IAM auth (the production overlay): no broker of that kind runs here, so only the config is checked."""
    from ctloop.ingest.broker import client_config
    from ctloop.ingest.lander import consumer_config

    monkeypatch.setenv("CTLOOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CTLOOP_KAFKA_SASL_MECHANISM", "AWS_MSK_IAM")
    settings = load_settings()
    assert client_config(settings)["security_protocol"] == "SASL_SSL"
    config = consumer_config(settings, "g", "c")
    assert config["sasl_mechanism"] == "AWS_MSK_IAM" and config["security_protocol"] == "SASL_SSL"
    monkeypatch.setenv("CTLOOP_KAFKA_SASL_MECHANISM", "KERBEROS")
    with pytest.raises(SettingsError, match="CTLOOP_KAFKA_SASL_MECHANISM"):
        load_settings()


def test_a_mistyped_variable_fails_and_names_the_setting_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTLOOP_KAFKA_BOOTSTRAPS", "broker:9092")
    monkeypatch.setenv("CTLOOP_LAKE_URL", "s3://bucket/lake")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "CTLOOP_KAFKA_BOOTSTRAPS: not a ctloop setting (did you mean CTLOOP_KAFKA_BOOTSTRAP?)" in str(err.value)
    assert "CTLOOP_LAKE_URL: not a ctloop setting (did you mean CTLOOP_LAKE_URI?)" in str(err.value)
    monkeypatch.delenv("CTLOOP_KAFKA_BOOTSTRAPS")
    monkeypatch.delenv("CTLOOP_LAKE_URL")
    monkeypatch.setenv("CTLOOP_ZZZ", "1")
    with pytest.raises(SettingsError, match=r"CTLOOP_ZZZ: not a ctloop setting$"):  # nothing close: no guess
        load_settings()
    monkeypatch.delenv("CTLOOP_ZZZ")
    with pytest.raises(SettingsError, match=r"lake_urx: not a ctloop setting \(did you mean lake_uri\?\)"):
        load_settings(lake_urx="s3://bucket/lake")


def test_ctloop_variables_that_are_not_settings_on_purpose_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared ConfigMap's pushgateway/serving names, and the service links Kubernetes adds for ctloop-* Services."""
    from ctloop.config.settings import NOT_SETTINGS

    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "x")
    # what a pod in the namespace of the Service ctloop-mlflow (port 5000, named http) gets without asking
    monkeypatch.setenv("CTLOOP_MLFLOW_SERVICE_HOST", "10.100.0.5")
    monkeypatch.setenv("CTLOOP_MLFLOW_SERVICE_PORT", "5000")
    monkeypatch.setenv("CTLOOP_MLFLOW_SERVICE_PORT_HTTP", "5000")
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT", "tcp://10.100.0.5:5000")  # same name as the setting mlflow_port
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT_5000_TCP", "tcp://10.100.0.5:5000")
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT_5000_TCP_PROTO", "tcp")
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT_5000_TCP_PORT", "5000")
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT_5000_TCP_ADDR", "10.100.0.5")
    monkeypatch.setenv("CTLOOP_PUSHGATEWAY_PORT", "tcp://10.100.0.6:9091")
    assert load_settings().mlflow_port == 15000  # the link is not taken for the setting
    monkeypatch.setenv("CTLOOP_MLFLOW_PORT", "15001")
    assert load_settings().mlflow_port == 15001
    monkeypatch.setenv("CTLOOP_PUSHGATEWAY_PORT", "9091")  # not a link's value: an unknown variable again
    with pytest.raises(SettingsError, match="CTLOOP_PUSHGATEWAY_PORT: not a ctloop setting"):
        load_settings()


def test_every_ctloop_variable_the_deployment_sets_is_known() -> None:
    """Images, manifests, Helm values and Terraform outputs set only settings or the names allowed on purpose."""
    import re

    from ctloop.config.settings import NOT_SETTINGS, Settings

    root = Path(__file__).resolve().parents[2]
    known = {f"CTLOOP_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    found: dict[str, str] = {}
    for folder in ("k8s", "docker", "terraform", "feature_repo"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix not in (".pyc",) and ".terraform" not in path.parts:
                for name in re.findall(r"\bCTLOOP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")):
                    found.setdefault(name, str(path.relative_to(root)))
    assert "CTLOOP_LAKE_URI" in found and "CTLOOP_PUSHGATEWAY_URL" in found  # the scan does see the files
    assert {name: where for name, where in found.items() if name not in known} == {}
