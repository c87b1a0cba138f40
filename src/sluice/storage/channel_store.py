"""Runtime channels in the database: one row per channel, its upstream key encrypted by the
caller (sluice.secret_box), and one version number bumped in the same transaction as every
change, which each server polls (sluice.runtime_channels)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from sluice.storage.aio import AsyncConnection, AsyncEngine
from sluice.storage.schema import runtime_channel_version, runtime_channels

__all__ = ["ChannelStore", "StoredChannel"]


@dataclass(frozen=True, slots=True)
class StoredChannel:
    name: str
    config: str  # the channel's JSON without its api_key
    api_key_enc: str
    created_at: float
    updated_at: float


async def _bump(conn: AsyncConnection) -> None:
    await conn.execute(
        update(runtime_channel_version)
        .where(runtime_channel_version.c.id == 1)
        .values(version=runtime_channel_version.c.version + 1)
    )


class ChannelStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def version(self) -> int:
        query = select(runtime_channel_version.c.version).where(runtime_channel_version.c.id == 1)
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        return int(found or 0)

    async def list(self) -> list[StoredChannel]:
        query = select(runtime_channels).order_by(runtime_channels.c.name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [StoredChannel(**dict(row)) for row in rows]

    async def get(self, name: str) -> StoredChannel | None:
        query = select(runtime_channels).where(runtime_channels.c.name == name)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else StoredChannel(**dict(row))

    async def create(self, name: str, config: str, api_key_enc: str) -> bool:
        """False when a channel of that name exists already."""
        now = time.time()
        async with self._engine.begin() as conn:
            exists = await conn.execute(
                select(runtime_channels.c.name).where(runtime_channels.c.name == name)
            )
            if exists.first() is not None:
                return False
            await conn.execute(
                insert(runtime_channels).values(
                    name=name, config=config, api_key_enc=api_key_enc,
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
            await _bump(conn)
        return True

    async def update(self, name: str, config: str, api_key_enc: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(runtime_channels)
                .where(runtime_channels.c.name == name)
                .values(config=config, api_key_enc=api_key_enc, updated_at=time.time())
            )
            if result.rowcount == 0:
                return False
            await _bump(conn)
        return True

    async def delete(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(runtime_channels).where(runtime_channels.c.name == name)
            )
            if result.rowcount == 0:
                return False
            await _bump(conn)
        return True
