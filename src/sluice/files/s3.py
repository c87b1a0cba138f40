"""Files in an S3-compatible bucket through boto3 (the ``s3`` extra), for replicas on several
hosts. boto3 is synchronous: each call runs in a thread, and uploads go through its managed
transfer (multipart above 8 MiB), which reads the source in parts rather than whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, BinaryIO

from sluice.files.storage import CHUNK_BYTES
from sluice.settings import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Storage"]


def _client(config: S3Config) -> S3Client:
    try:
        import boto3
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "files.backend: s3 needs boto3: install Sluice with the s3 extra (sluice[s3])"
        ) from None
    options: dict[str, Any] = {}
    if config.endpoint_url:
        options["endpoint_url"] = config.endpoint_url
    if config.region:
        options["region_name"] = config.region
    if config.access_key_id is not None and config.secret_access_key is not None:
        options["aws_access_key_id"] = config.access_key_id.get_secret_value()
        options["aws_secret_access_key"] = config.secret_access_key.get_secret_value()
    client: S3Client = boto3.session.Session().client("s3", **options)
    return client


class S3Storage:
    def __init__(self, config: S3Config) -> None:
        self._bucket = config.bucket
        self._prefix = config.prefix
        self._client = _client(config)

    def _key(self, name: str) -> str:
        return f"{self._prefix}{name}"

    async def put(self, name: str, source: BinaryIO) -> None:
        await asyncio.to_thread(self._client.upload_fileobj, source, self._bucket, self._key(name))

    async def read(self, name: str) -> AsyncIterator[bytes]:
        try:
            answer = await asyncio.to_thread(
                self._client.get_object, Bucket=self._bucket, Key=self._key(name)
            )
        except self._client.exceptions.NoSuchKey:
            raise FileNotFoundError(name) from None
        body = answer["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(
            self._client.delete_object, Bucket=self._bucket, Key=self._key(name)
        )
