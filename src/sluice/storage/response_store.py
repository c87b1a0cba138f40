"""Stored Responses API responses for translated channels (table ``responses``, migration 0007).

A response created with ``store`` (the default) on a channel that serves the Responses API
through chat is kept with its full context as input items, so ``previous_response_id``,
``GET /v1/responses/{id}``, its ``input_items`` and ``DELETE`` work there too. Every read and
delete is scoped to the key that created the response: another key's id reads as absent. A row
expires after ``responses.retention_days``; expired rows are never returned and are deleted by
the next save (one indexed range delete in the same transaction) or by ``prune``, so no
background job is needed for the table to stay bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import stored_responses

__all__ = ["ResponseStore", "StoredResponse"]

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    key_id: str
    created_at: float
    expires_at: float
    response: dict[str, Any]  # the Response object as last sent to the client
    input_items: list[dict[str, Any]]  # the whole context it answered, as input items
    upstream_held: bool = False  # passed through: the upstream (OpenAI) keeps it too


class ResponseStore:
    def __init__(self, engine: AsyncEngine, retention_days: float) -> None:
        self._engine = engine
        self._retention_s = retention_days * _DAY_S

    async def save(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        key_id: str,
        now: float | None = None,
        *,
        upstream_held: bool = False,
    ) -> StoredResponse:
        now = time.time() if now is None else now
        stored = StoredResponse(
            id=response["id"],
            key_id=key_id,
            created_at=now,
            expires_at=now + self._retention_s,
            response=response,
            input_items=input_items,
            upstream_held=upstream_held,
        )
        row = {
            "id": stored.id,
            "key_id": key_id,
            "created_at": stored.created_at,
            "expires_at": stored.expires_at,
            "response": orjson.dumps(response).decode(),
            "input_items": orjson.dumps(input_items).decode(),
            "upstream_held": upstream_held,
        }
        async with self._engine.begin() as conn:
            await conn.execute(
                stored_responses.delete().where(stored_responses.c.expires_at <= now)
            )
            await conn.execute(stored_responses.insert().values(row))
        return stored

    async def get(
        self, response_id: str, key_id: str, now: float | None = None
    ) -> StoredResponse | None:
        now = time.time() if now is None else now
        table = stored_responses
        query = select(table).where(
            table.c.id == response_id, table.c.key_id == key_id, table.c.expires_at > now
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return StoredResponse(
            id=row["id"],
            key_id=row["key_id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            response=orjson.loads(row["response"]),
            input_items=orjson.loads(row["input_items"]),
            upstream_held=bool(row["upstream_held"]),
        )

    async def delete(self, response_id: str, key_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        table = stored_responses
        async with self._engine.begin() as conn:
            result = await conn.execute(
                table.delete().where(
                    table.c.id == response_id, table.c.key_id == key_id, table.c.expires_at > now
                )
            )
        return bool(result.rowcount)

    async def prune(self, now: float | None = None) -> int:
        """Delete every expired response; returns how many."""
        now = time.time() if now is None else now
        async with self._engine.begin() as conn:
            result = await conn.execute(
                stored_responses.delete().where(stored_responses.c.expires_at <= now)
            )
        return int(result.rowcount or 0)
