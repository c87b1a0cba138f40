"""Migration 0006 and the runtime channel store, on SQLite and PostgreSQL: rows, the version
every change bumps, encryption at rest, and a reversible migration."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from sluice.secret_box import SecretBox, SecretBoxError
from sluice.storage.channel_store import ChannelStore
from sluice.storage.db import create_engine
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database

KEY_MATERIAL = "a-secrets-key-of-at-least-32-characters!"


async def _tables(engine: Any) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_store_versions_and_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        store = ChannelStore(engine)
        box = SecretBox(KEY_MATERIAL)
        assert await store.version() == 0 and await store.list() == []
        sealed = box.encrypt("sk-upstream-plain-text")
        assert "sk-upstream" not in sealed and box.decrypt(sealed) == "sk-upstream-plain-text"
        assert await store.create("a", '{"type": "openai"}', sealed)
        assert not await store.create("a", "{}", sealed)  # taken: nothing changes
        assert await store.version() == 1
        assert await store.update("a", '{"type": "openai", "weight": 2}', sealed)
        assert not await store.update("missing", "{}", sealed)
        assert await store.version() == 2
        found = await store.get("a")
        assert found is not None and found.config.endswith('"weight": 2}')
        assert await store.delete("a") and not await store.delete("a")
        assert await store.version() == 3 and await store.get("a") is None

        before = "0010"  # the revision 0006 follows (migrations are chained in landing order)
        async with engine.begin() as conn:  # downgrade past 0006 and up again
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), before))
        assert await current_revision(engine) == before
        assert not {"runtime_channels", "runtime_channel_version"} & await _tables(engine)
        await upgrade_database(engine, "0006")
        assert await current_revision(engine) == "0006"
        assert await ChannelStore(engine).version() == 0
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("usage"))
        assert {"ix_usage_model_created", "ix_usage_channel_created"} <= {
            str(i["name"]) for i in indexes
        }
        count = await _count(engine)
        assert count == 0
    finally:
        await engine.dispose()


async def _count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM runtime_channels"))).scalar_one())


def test_a_different_key_cannot_read_a_secret() -> None:
    sealed = SecretBox(KEY_MATERIAL).encrypt("sk-x")
    with pytest.raises(SecretBoxError):
        SecretBox("another-secrets-key-of-32-characters-or-more").decrypt(sealed)
    with pytest.raises(SecretBoxError):
        SecretBox("short")
