"""The data lake: one small interface over a local folder (``file://``) and S3 (``s3://``).

A write returns only once the object is durable: fsync + atomic rename locally, a completed PUT on
S3. Readers never see a half-written file, which is what lets the lander commit Kafka offsets
right after a write returns.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow.fs as pafs

if TYPE_CHECKING:
    import pyarrow.dataset as pads

from ctloop.config.settings import Settings


class Lake(ABC):
    """Paths are relative, '/'-separated keys under the lake root."""

    uri: str

    @abstractmethod
    def write(self, path: str, data: bytes) -> None: ...

    @abstractmethod
    def read(self, path: str) -> bytes: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove ``path``; a missing object is not an error (deletes are retried after crashes)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every object below ``prefix``, recursively, as sorted relative paths."""

    @abstractmethod
    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root path on it, for dataset reads."""

    def url(self, path: str) -> str:
        return f"{self.uri}/{path}"

    def dataset(self, prefix: str) -> pads.Dataset | None:
        """The Parquet dataset under ``prefix`` for Arrow reads, None when nothing is there.

        Hive partitions (``event_date``, ``event_hour``) come back as strings, so a reader can prune
        by them; bookkeeping files (``_*``, ``.*``) are skipped.
        """
        import pyarrow as pa
        import pyarrow.dataset as ds

        fs, root = self.arrow_fs()
        partitioning = ds.partitioning(pa.schema([("event_date", pa.string()), ("event_hour", pa.string())]),
                                       flavor="hive")
        try:
            return ds.dataset(f"{root}/{prefix}", filesystem=fs, format="parquet", partitioning=partitioning,
                              ignore_prefixes=["_", "."])
        except (FileNotFoundError, OSError):
            return None


class LocalLake(Lake):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def _path(self, path: str) -> Path:
        return self.root / path

    def write(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)

    def read(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.root)


class S3Lake(Lake):
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3  # deferred: boto3 costs ~0.5 s to import and only S3 lakes need it

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        # boto3 clients do not pickle; the lander's writer process builds its own
        return (S3Lake, (self.bucket, self.prefix, self.endpoint_url))

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def write(self, path: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def read(self, path: str) -> bytes:
        return self._s3.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, path: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(path))

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        kwargs: dict[str, object] = {}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
        creds = self._s3._request_signer._credentials  # reuse what boto3 resolved (env, profile, IRSA)
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
        region = self._s3.meta.region_name
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), f"{self.bucket}/{self.prefix}".rstrip("/")


def open_lake(settings: Settings) -> Lake:
    parsed = urlparse(settings.lake_uri)
    if parsed.scheme == "file":
        return LocalLake(Path(parsed.path))
    return S3Lake(parsed.netloc, parsed.path, settings.s3_endpoint_url)
