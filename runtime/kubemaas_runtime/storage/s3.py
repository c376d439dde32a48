"""``s3://bucket/prefix`` through boto3; works with MinIO and other S3-compatible endpoints.

The endpoint comes from ``KUBEMAAS_S3_ENDPOINT`` or boto3's own ``AWS_ENDPOINT_URL``;
credentials from the standard AWS environment (``AWS_ACCESS_KEY_ID`` ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings
from kubemaas_runtime.storage.stores import safe_rel
from kubemaas_runtime.storage.uris import S3Location


class S3Store:
    def __init__(self, location: S3Location, settings: StorageSettings) -> None:
        self.uri = location.uri
        self.bucket = location.bucket
        self.prefix = location.prefix
        config = Config(retries={"max_attempts": settings.attempts, "mode": "standard"})
        self.client: Any = boto3.client("s3", endpoint_url=settings.s3_endpoint or None, config=config)

    def key_of(self, rel: str) -> str:
        rel = safe_rel(self.uri, rel)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def get(self, rel: str, dest: Path) -> None:
        key = self.key_of(rel)
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, key, str(tmp))
            os.replace(tmp, dest)
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"s3://{self.bucket}/{key}: not found") from exc
            raise StorageError(f"s3://{self.bucket}/{key}: {code or 'error'}: {exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"s3://{self.bucket}/{key}: {exc}") from exc

    def put(self, src: Path, rel: str) -> None:
        key = self.key_of(rel)
        try:
            self.client.upload_file(str(src), self.bucket, key)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"s3://{self.bucket}/{key}: upload of {src} failed: {exc}") from exc
