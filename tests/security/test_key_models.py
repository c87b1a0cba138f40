"""Key allow-lists: an empty ``models`` list allows no model; every model is ``["*"]``, the
default for a new key; migration 0003 rewrites keys stored with an empty list (then: all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from alembic import command
from sqlalchemy import insert, select, text, update

from sluice.cli import main as cli_main
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database
from sluice.storage.schema import api_keys
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway

CHAT_MODELS = ["test-model", "gpt-4o-mini", "anything-at-all"]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _chat(gateway: Gateway, key: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers)


def _listed(gateway: Gateway, key: str) -> list[str]:
    response = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"]]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_empty_list_allows_no_model(gateway: Gateway, fake_openai: FakeOpenAI, model: str) -> None:
    key = gateway.create_key("none", allowed_models=[])
    response = _chat(gateway, key, model)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert fake_openai.received == []


def test_empty_list_lists_no_model(gateway: Gateway) -> None:
    key = gateway.create_key("none", allowed_models=[])
    assert _listed(gateway, key) == []
    url = f"{gateway.base_url}/models/gpt-4o-mini"
    response = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404


@pytest.mark.parametrize("options", [{"allowed_models": ["*"]}, {}], ids=["star", "default"])
def test_star_and_the_default_allow_every_model(gateway: Gateway, options: dict[str, Any]) -> None:
    key = gateway.create_key("all", **options)
    assert gateway.key_record(key).allowed_models == ("*",)
    for model in ("test-model", "gpt-4o-mini"):
        assert _chat(gateway, key, model).status_code == 200
    assert "gpt-4o-mini" in _listed(gateway, key)


def test_admin_api_default_is_explicit_and_empty_means_none(gateway: Gateway) -> None:
    url = f"{gateway.url}/admin/keys"
    default = httpx.post(url, json={"name": "d"}, headers=ADMIN).json()
    assert default["allowed_models"] == ["*"]
    none = httpx.post(url, json={"name": "n", "models": []}, headers=ADMIN).json()
    assert none["allowed_models"] == []
    assert _chat(gateway, none["key"], "test-model").status_code == 403
    # null is ambiguous now (it never cleared the list): refused, naming the field.
    response = httpx.patch(f"{url}/{default['id']}", json={"models": None}, headers=ADMIN)
    assert response.status_code == 400 and response.json()["error"]["param"] == "models"
    narrowed = httpx.patch(f"{url}/{default['id']}", json={"models": []}, headers=ADMIN).json()
    assert narrowed["allowed_models"] == []
    assert _chat(gateway, default["key"], "test-model").status_code == 403


def test_cli_default_is_every_model_and_empty_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'k.db'}"}))
    base = ["keys", "create", "--config", str(config), "--json", "--name"]
    assert cli_main([*base, "default"]) == 0
    assert orjson.loads(capsys.readouterr().out)["allowed_models"] == ["*"]
    assert cli_main([*base, "none", "--models", ""]) == 0
    assert orjson.loads(capsys.readouterr().out)["allowed_models"] == []


# --- migration 0003 ---------------------------------------------------------------------------


def _row(key_id: str, models: str | None) -> dict[str, Any]:
    return {
        "id": key_id, "name": key_id, "key_hash": key_id.ljust(64, "0"), "prefix": "sk-x",
        "budget_micro": None, "spent_micro": 0, "expires_at": None, "allowed_models": models,
        "allowed_ips": "[]", "rpm": None, "tpm": None, "disabled": False, "created_at": 0.0,
        "last_used_at": None,
    }  # fmt: skip


async def _models_by_id(engine: Any) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(api_keys.c.id, api_keys.c.allowed_models))
        return {row.id: row.allowed_models for row in rows}


async def _downgrade(engine: Any, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


async def _migration_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0002")
        async with engine.begin() as conn:
            # Keys as the code before 0003 wrote them: [] meant every model.
            old = {"old_all": "[]", "old_spaced": "[ ]", "old_some": '["gpt-4o*"]'}
            for key_id, models in old.items():
                await conn.execute(insert(api_keys).values(_row(key_id, models)))
        await upgrade_database(engine, "0003")  # this test is about 0003, not the head
        assert await current_revision(engine) == "0003"
        store = KeyStore(engine)
        for key_id in ("old_all", "old_spaced"):
            record = await store.get(key_id)
            assert record is not None and record.allowed_models == ("*",)
            assert record.allows_model("gpt-4o") and record.allows_model("claude-x")
        some = await store.get("old_some")
        assert some is not None and some.allowed_models == ("gpt-4o*",)
        assert not some.allows_model("claude-x")

        async with engine.begin() as conn:  # a key that allows nothing, only expressible now
            await conn.execute(insert(api_keys).values(_row("new_none", "[]")))
        await _downgrade(engine, "0002")
        after = await _models_by_id(engine)
        assert after["old_all"] == "[]" and after["old_some"] == '["gpt-4o*"]'
        assert after["new_none"] == '[""]'  # matches no model under the old code either

        await upgrade_database(engine)
        again = await _models_by_id(engine)
        assert again["old_all"] == '["*"]' and again["new_none"] == '[""]'
        none = await store.get("new_none")
        assert none is not None and not none.allows_model("gpt-4o")
    finally:
        await engine.dispose()


async def test_migration_0003_on_sqlite(tmp_path: Path) -> None:
    await _migration_round_trip(f"sqlite:///{tmp_path / 'migrate.db'}")


async def test_migration_0003_on_postgresql(pg_url: str) -> None:
    await _migration_round_trip(pg_url)


async def test_a_null_list_is_upgraded_too(tmp_path: Path) -> None:
    """The column is NOT NULL, but a hand-edited row may hold ''; both mean 'all' before 0003."""
    engine = create_engine(f"sqlite:///{tmp_path / 'blank.db'}")
    try:
        await upgrade_database(engine, "0002")
        async with engine.begin() as conn:
            await conn.execute(insert(api_keys).values(_row("blank", "[]")))
            await conn.execute(update(api_keys).values(allowed_models=""))
        await upgrade_database(engine)
        assert (await _models_by_id(engine))["blank"] == '["*"]'
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM api_keys"))).scalar_one() == 1
    finally:
        await engine.dispose()
