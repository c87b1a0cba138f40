"""Where file bytes live: a local directory (the default) or an S3-compatible bucket.

Both take a local file object to store (an upload spooled to disk by the multipart parser, or
an output file written to a temporary file) and hand bytes back as an async stream of chunks,
so no file is ever held whole in memory. Names are chosen by Sluice (``file-…``), never by a
client, so they cannot climb out of the directory or the bucket prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from sluice.settings import FilesConfig
from sluice.storage.db import is_sqlite

__all__ = ["FileStorage", "LocalStorage", "build_storage", "CHUNK_BYTES"]

CHUNK_BYTES = 1024 * 1024


class FileStorage(Protocol):
    async def put(self, name: str, source: BinaryIO) -> None:
        """Store what is left of ``source`` (read from its current position) as ``name``."""

    def read(self, name: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; ``FileNotFoundError`` if there are none."""

    async def delete(self, name: str) -> None:
        """Remove ``name``; nothing happens if it is already gone."""


class LocalStorage:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"invalid stored file name {name!r}")
        return self.directory / name

    async def put(self, name: str, source: BinaryIO) -> None:
        await asyncio.to_thread(self._put, name, source)

    def _put(self, name: str, source: BinaryIO) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(name)
        partial = final.with_name(f".{name}.partial")
        # Written beside the final name and renamed: a reader never sees half a file.
        with partial.open("wb") as target:
            shutil.copyfileobj(source, target, CHUNK_BYTES)
            target.flush()
            os.fsync(target.fileno())
        partial.replace(final)

    async def read(self, name: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self._path(name).open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(name).unlink)


def default_directory(config: FilesConfig, database_url: str) -> Path:
    if config.directory:
        return Path(config.directory).expanduser()
    if is_sqlite(database_url) and database_url.startswith("sqlite:///"):
        database = database_url[len("sqlite:///") :]
        if database and database != ":memory:":
            return Path(database).expanduser().parent / "files"
    return Path(".sluice") / "files"


def build_storage(config: FilesConfig, database_url: str) -> FileStorage:
    if config.backend == "s3":
        assert config.s3 is not None  # FilesConfig checks it
        from sluice.files.s3 import S3Storage  # only with the s3 extra installed

        return S3Storage(config.s3)
    return LocalStorage(default_directory(config, database_url))
