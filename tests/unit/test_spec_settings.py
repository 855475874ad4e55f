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
