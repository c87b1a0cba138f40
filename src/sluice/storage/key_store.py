"""Key rows: create, read, update, delete. Only hashes are stored.

Every update and delete also appends to the key change log in the same transaction
(``key_changes.py``), so servers that cache keys learn of it whoever made it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import RowMapping

from sluice.keys import ALL_MODELS, KeyRecord, generate_key, hash_key, key_prefix
from sluice.storage.aio import AsyncConnection, AsyncEngine
from sluice.storage.key_changes import record_change
from sluice.storage.schema import api_keys

__all__ = ["KeyStore", "KeyChanges", "NewKey"]


@dataclass(frozen=True, slots=True)
class NewKey:
    secret: str
    record: KeyRecord


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """Fields to change; ``None`` means leave as is, ``clear_*`` sets a field back to null."""

    name: str | None = None
    budget_micro: int | None = None
    clear_budget: bool = False
    expires_at: float | None = None
    clear_expiry: bool = False
    allowed_models: list[str] | None = None
    allowed_ips: list[str] | None = None
    rpm: int | None = None
    clear_rpm: bool = False
    tpm: int | None = None
    clear_tpm: bool = False
    max_concurrent: int | None = None
    clear_max_concurrent: bool = False
    disabled: bool | None = None
    reset_spent: bool = False

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.clear_budget:
            out["budget_micro"] = None
        elif self.budget_micro is not None:
            out["budget_micro"] = self.budget_micro
        if self.clear_expiry:
            out["expires_at"] = None
        elif self.expires_at is not None:
            out["expires_at"] = self.expires_at
        if self.allowed_models is not None:
            out["allowed_models"] = orjson.dumps(self.allowed_models).decode()
        if self.allowed_ips is not None:
            out["allowed_ips"] = orjson.dumps(self.allowed_ips).decode()
        for field_name in ("rpm", "tpm", "max_concurrent"):
            if getattr(self, f"clear_{field_name}"):
                out[field_name] = None
            elif getattr(self, field_name) is not None:
                out[field_name] = getattr(self, field_name)
        if self.disabled is not None:
            out["disabled"] = self.disabled
        if self.reset_spent:
            out["spent_micro"] = 0
        return out


def _to_record(row: RowMapping) -> KeyRecord:
    return KeyRecord.build(
        id=row["id"],
        name=row["name"],
        key_hash=row["key_hash"],
        prefix=row["prefix"],
        budget_micro=row["budget_micro"],
        spent_micro=int(row["spent_micro"] or 0),
        expires_at=row["expires_at"],
        allowed_models=orjson.loads(row["allowed_models"] or "[]"),
        allowed_ips=orjson.loads(row["allowed_ips"] or "[]"),
        rpm=row["rpm"],
        tpm=row["tpm"],
        max_concurrent=row["max_concurrent"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


async def _hash_of(conn: AsyncConnection, key_id: str) -> str | None:
    found = await conn.execute(select(api_keys.c.key_hash).where(api_keys.c.id == key_id))
    key_hash: str | None = found.scalar_one_or_none()
    return key_hash


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        name: str,
        *,
        budget_micro: int | None = None,
        expires_at: float | None = None,
        allowed_models: list[str] | None = None,
        allowed_ips: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
    ) -> NewKey:
        secret = generate_key()
        values: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "name": name,
            "key_hash": hash_key(secret),
            "prefix": key_prefix(secret),
            "budget_micro": budget_micro,
            "spent_micro": 0,
            "expires_at": expires_at,
            # None (not given) allows every model; an explicit [] allows none.
            "allowed_models": orjson.dumps(
                [ALL_MODELS] if allowed_models is None else allowed_models
            ).decode(),
            "allowed_ips": orjson.dumps(allowed_ips or []).decode(),
            "rpm": rpm,
            "tpm": tpm,
            "max_concurrent": max_concurrent,
            "disabled": False,
            "created_at": time.time(),
            "last_used_at": None,
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**values))
        record = await self.get(str(values["id"]))
        assert record is not None
        return NewKey(secret=secret, record=record)

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(api_keys).where(api_keys.c.id == key_id)))
                .mappings()
                .first()
            )
        return None if row is None else _to_record(row)

    async def find(self, id_or_prefix_or_name: str) -> KeyRecord | None:
        """Look a key up by id, then visible prefix, then name (admin convenience)."""
        async with self._engine.connect() as conn:
            for column in (api_keys.c.id, api_keys.c.prefix, api_keys.c.name):
                rows = (
                    (await conn.execute(select(api_keys).where(column == id_or_prefix_or_name)))
                    .mappings()
                    .all()
                )
                if len(rows) == 1:
                    return _to_record(rows[0])
        return None

    async def get_by_hash(self, key_hash: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)))
                .mappings()
                .first()
            )
        return None if row is None else _to_record(row)

    async def list(self) -> list[KeyRecord]:
        async with self._engine.connect() as conn:
            rows = (
                (await conn.execute(select(api_keys).order_by(api_keys.c.created_at)))
                .mappings()
                .all()
            )
        return [_to_record(row) for row in rows]

    async def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        values = changes.values()
        if values:
            async with self._engine.begin() as conn:
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
                key_hash = await _hash_of(conn, key_id)
                if key_hash is not None:
                    await record_change(conn, key_id, key_hash, spend_reset=changes.reset_spent)
        return await self.get(key_id)

    async def delete(self, key_id: str) -> bool:
        async with self._engine.begin() as conn:
            key_hash = await _hash_of(conn, key_id)
            if key_hash is None:
                return False
            await conn.execute(delete(api_keys).where(api_keys.c.id == key_id))
            await record_change(conn, key_id, key_hash, spend_reset=True)
        return True

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
            )
