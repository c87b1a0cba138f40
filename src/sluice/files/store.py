"""File records in the database: who owns a file, what it is, where its bytes are stored."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, insert, select

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import files

__all__ = ["FileRecord", "FileStore", "new_file_id"]


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    key_id: str
    purpose: str
    filename: str
    bytes: int
    storage_name: str
    created_at: float
    line_count: int | None = None
    urls: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """The OpenAI file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


def _record(row: Any) -> FileRecord:
    return FileRecord(
        id=row.id,
        key_id=row.key_id,
        purpose=row.purpose,
        filename=row.filename,
        bytes=int(row.bytes),
        storage_name=row.storage_name,
        created_at=float(row.created_at),
        line_count=row.line_count,
        urls=tuple(orjson.loads(row.urls)) if row.urls else (),
    )


class FileStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, record: FileRecord) -> None:
        values = {
            "id": record.id,
            "key_id": record.key_id,
            "purpose": record.purpose,
            "filename": record.filename,
            "bytes": record.bytes,
            "storage_name": record.storage_name,
            "created_at": record.created_at,
            "line_count": record.line_count,
            "urls": orjson.dumps(list(record.urls)).decode() if record.urls else None,
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(files).values(**values))

    async def get(self, file_id: str, key_id: str) -> FileRecord | None:
        """The file if ``key_id`` owns it: another key's file is as absent as a missing one."""
        query = select(files).where(files.c.id == file_id, files.c.key_id == key_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def page(
        self, key_id: str, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[FileRecord], bool]:
        """One page of the key's files and whether more follow (``after`` is a file id)."""
        query = select(files).where(files.c.key_id == key_id)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        order = (files.c.created_at.desc(), files.c.id.desc())
        if not newest_first:
            order = (files.c.created_at.asc(), files.c.id.asc())
        async with self._engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(
                        select(files.c.created_at, files.c.id).where(
                            files.c.id == after, files.c.key_id == key_id
                        )
                    )
                ).first()
                if cursor is not None:
                    at, ident = cursor
                    if newest_first:
                        query = query.where(
                            (files.c.created_at < at)
                            | ((files.c.created_at == at) & (files.c.id < ident))
                        )
                    else:
                        query = query.where(
                            (files.c.created_at > at)
                            | ((files.c.created_at == at) & (files.c.id > ident))
                        )
            rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).all()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def delete(self, file_id: str, key_id: str) -> FileRecord | None:
        found = await self.get(file_id, key_id)
        if found is None:
            return None
        async with self._engine.begin() as conn:
            await conn.execute(delete(files).where(files.c.id == file_id))
        return found

    @staticmethod
    def new(key_id: str, purpose: str, filename: str, size: int, **extra: Any) -> FileRecord:
        file_id = new_file_id()
        return FileRecord(
            id=file_id,
            key_id=key_id,
            purpose=purpose,
            filename=filename,
            bytes=size,
            storage_name=file_id,
            created_at=time.time(),
            **extra,
        )
