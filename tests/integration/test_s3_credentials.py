"""Arrow reads of an S3 lake outlive the credentials they started with (IRSA / Pod Identity on EKS).

No real AWS can be reached from the test machines, so AWS is emulated on 127.0.0.1:

* a credentials endpoint in the format of ECS / EKS Pod Identity (``AWS_CONTAINER_CREDENTIALS_FULL_URI``,
  with the ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` the agent requires) hands out a new key on every call,
  each expiring a few seconds later, as AWS's temporary credentials expire after their session lifetime;
* moto accepts any key, so a small proxy in front of it plays S3's part in that: a request signed with
  an expired (or never issued) key gets S3's ``403 ExpiredToken`` and is not forwarded.

The lake's dataset is opened, the key it was opened with expires, and only then are the files read:
credentials frozen into the filesystem fail there, refreshed ones go on.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from ctloop.lake.store import S3Lake

LIFETIME_S = 4
POD_TOKEN = "pod-identity-token"


@dataclass
class FakeAws:
    """What the emulated AWS handed out and saw."""

    issued: dict[str, datetime] = field(default_factory=dict)  # access key -> expiry
    credential_agents: list[str] = field(default_factory=list)  # User-Agent of each credentials request
    signed_with: list[tuple[str, str, str]] = field(default_factory=list)  # (access key, method, path) per S3 call
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, agent: str) -> dict[str, str]:
        with self.lock:
            key = f"ASIAFAKE{len(self.issued):08d}"
            expiry = (datetime.now(UTC) + timedelta(seconds=LIFETIME_S)).replace(microsecond=0)
            self.issued[key] = expiry
            self.credential_agents.append(agent)
        return {"AccessKeyId": key, "SecretAccessKey": f"secret-{key}", "Token": f"token-{key}",
                "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def wait_until_all_expired(self) -> None:
        """Not a timing assertion: the test waits for the moment AWS would stop taking every key issued so far."""
        with self.lock:
            last = max(self.issued.values())
        while datetime.now(UTC) <= last:
            time.sleep(0.1)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def fake_aws(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeAws, str]]:
    """The credentials endpoint and the checking S3 proxy; the environment of a pod with only them to go on."""
    aws = FakeAws()
    moto = urlparse(s3_endpoint)

    class Credentials(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.headers.get("Authorization") != POD_TOKEN:
                self.send_error(401)
                return
            body = json.dumps(aws.issue(self.headers.get("User-Agent", ""))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class CheckingS3(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = re.search(r"Credential=([^/]+)/", self.headers.get("Authorization", ""))
            key = match.group(1) if match else ""
            with aws.lock:
                expiry = aws.issued.get(key)
                aws.signed_with.append((key, self.command, self.path))
            if expiry is None or datetime.now(UTC) >= expiry:
                with aws.lock:
                    aws.refused.append(key)
                error = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>" \
                        b"<Message>The provided token has expired.</Message></Error>"
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(error)
                return
            upstream = http.client.HTTPConnection(moto.hostname, moto.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            resp = upstream.getresponse()
            payload = resp.read()
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                    self.send_header(name, value)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            upstream.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    import boto3

    # boto3's default session keeps the credentials it resolved: a fresh one here, the original back afterwards
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    credentials, credentials_url = _serve(Credentials)
    proxy, proxy_url = _serve(CheckingS3)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{credentials_url}/v1/credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", POD_TOKEN)
    yield aws, proxy_url
    proxy.shutdown()
    credentials.shutdown()


def test_a_dataset_read_outlives_the_credentials_it_was_opened_with(s3_endpoint: str, fake_aws, tmp_path: Path) -> None:
    import boto3

    aws, proxy_url = fake_aws
    # the data, written straight to moto with static keys (writes are not what is under test)
    direct = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    bucket = f"creds-{tmp_path.name.lower().replace('_', '-')[:40]}"
    direct.create_bucket(Bucket=bucket)
    for hour in range(6):
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": list(range(hour * 10, hour * 10 + 10))}), buf)
        direct.put_object(Bucket=bucket, Key=f"lake/raw/event_date=2026-01-01/event_hour={hour:02d}/part.parquet",
                          Body=buf.getvalue())

    lake = S3Lake(bucket, "lake", proxy_url)
    dataset = lake.dataset("raw")  # lists the files and reads a footer for the schema: the first key(s)
    assert dataset is not None and len(dataset.files) == 6
    opened_with = {key for key, _, _ in aws.signed_with}
    assert opened_with and opened_with <= set(aws.issued)

    aws.wait_until_all_expired()
    before_reads = len(aws.signed_with)
    first = dataset.to_table()  # a frozen key is refused here: ExpiredToken
    aws.wait_until_all_expired()
    second = dataset.to_table(filter=pads.field("event_hour") == "05")  # and a second time, later still

    assert sorted(first.column("id").to_pylist()) == list(range(60))
    assert sorted(second.column("id").to_pylist()) == list(range(50, 60))
    assert aws.refused == []
    reads = [key for key, method, path in aws.signed_with[before_reads:]
             if method == "GET" and path.endswith(".parquet")]
    assert reads and not set(reads) & opened_with  # every file read was signed with a key issued after opening
    # pyarrow's own AWS SDK asked for them (boto3 asks through urllib3 and says so in its User-Agent)
    assert sum("aws-sdk-cpp" in agent for agent in aws.credential_agents) >= 2, aws.credential_agents
