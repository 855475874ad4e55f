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
    def create(self, path: str, data: bytes) -> bool:
        """Write ``path`` only if nothing is there yet, durably and atomically: True if this call created it.

        Of writers racing for one path exactly one gets True and no one overwrites it, which is what
        lets the retrain ledger hand each accepted-run number to one decider. False means taken, which
        on S3 may be by this very call (a PUT whose reply was lost, retried by the client): a caller
        that must know reads what is there.
        """

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

        Hive partitions (``event_date``, and ``event_hour`` in raw data) come back as strings, so a reader can prune
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

    def _staged(self, path: str, data: bytes) -> tuple[Path, Path]:
        """``data`` written and fsynced to a hidden temp file beside ``path``: (temp file, target)."""
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp, target

    @staticmethod
    def _sync_dir(folder: Path) -> None:
        """Make a rename or link in ``folder`` survive a power cut."""
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def write(self, path: str, data: bytes) -> None:
        tmp, target = self._staged(path, data)
        os.replace(tmp, target)
        self._sync_dir(target.parent)

    def create(self, path: str, data: bytes) -> bool:
        tmp, target = self._staged(path, data)
        try:
            os.link(tmp, target)  # unlike os.replace, a link fails when the target exists: whole file or nothing
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        self._sync_dir(target.parent)
        return True

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

    def create(self, path: str, data: bytes) -> bool:
        import time

        from botocore.exceptions import ClientError

        for attempt in range(1, 6):
            try:
                self._s3.put_object(Bucket=self.bucket, Key=self._key(path), Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":  # 412: the key exists
                    return False
                if code != "ConditionalRequestConflict" or attempt == 5:
                    raise
                time.sleep(0.2 * attempt)  # 409: another conditional write to the key is in flight; S3 says retry
        return False

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
        """No keys are passed: pyarrow's AWS SDK resolves credentials itself and refreshes them before they expire.

        Its default chain reads the same sources as boto3: the ``AWS_*`` environment, the profile files
        (``credential_process`` and SSO included), web identity (IRSA on EKS), the container endpoint
        (EKS Pod Identity, ECS) and the instance profile. Keys copied from boto3 would be frozen into the
        filesystem and expire in the middle of a long read (IRSA's last an hour).
        """
        kwargs: dict[str, object] = {}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
        region = self._s3.meta.region_name
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), f"{self.bucket}/{self.prefix}".rstrip("/")


def open_lake(settings: Settings) -> Lake:
    parsed = urlparse(settings.lake_uri)
    if parsed.scheme == "file":
        return LocalLake(Path(parsed.path))
    return S3Lake(parsed.netloc, parsed.path, settings.s3_endpoint_url)
