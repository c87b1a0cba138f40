"""The admin API and the CLI change keys through one service: the same bad input gets the same
error from both (the API as a 400/404 naming the field, the CLI as that message, status 2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from sluice.admin.key_service import KeyService, validated
from sluice.admin.schemas import KeyCreate, KeyUpdate
from sluice.cli import main as cli_main
from sluice.errors import InvalidRequest, NotFound
from sluice.keys import KeyRecord
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from tests.support import ADMIN_KEY, Gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass(frozen=True)
class Bad:
    name: str
    cli: list[str]  # after `keys create` / `keys update k`
    api: dict[str, Any]
    param: str | None
    update: bool = False
    status: int = 400
    code: str = "invalid_request"
    ident: str = "k"


CASES = [
    Bad("empty name", ["--name", ""], {"name": ""}, "name"),
    Bad("long name", ["--name", "n" * 201], {"name": "n" * 201}, "name"),
    Bad("negative budget", ["--name", "x", "--budget-usd", "-1"], {"name": "x", "budget_usd": -1},
        "budget_usd"),
    Bad("rpm 0", ["--name", "x", "--rpm", "0"], {"name": "x", "rpm": 0}, "rpm"),
    Bad("tpm < 0", ["--name", "x", "--tpm", "-5"], {"name": "x", "tpm": -5}, "tpm"),
    Bad("concurrency 0", ["--name", "x", "--max-concurrent", "0"],
        {"name": "x", "max_concurrent": 0}, "max_concurrent"),
    Bad("bad ip", ["--name", "x", "--allow-ip", "nope"], {"name": "x", "allowed_ips": ["nope"]},
        "allowed_ips"),
    Bad("bad expiry", ["--name", "x", "--expires", "tomorrow"],
        {"name": "x", "expires_at": "tomorrow"}, "expires_at"),
    Bad("update: empty name", ["--name", ""], {"name": ""}, "name", update=True),
    Bad("update: rpm < 0", ["--rpm", "-3"], {"rpm": -3}, "rpm", update=True),
    Bad("update: bad ip", ["--allow-ip", "10.0.0.0/33"], {"allowed_ips": ["10.0.0.0/33"]},
        "allowed_ips", update=True),
    Bad("update: bad expiry", ["--expires", "31/12/2030"], {"expires_at": "31/12/2030"},
        "expires_at", update=True),
    Bad("update: no such key", ["--rpm", "5"], {"rpm": 5}, None, update=True, status=404,
        code="key_not_found", ident="nobody"),
]  # fmt: skip


def _config(gateway: Gateway, tmp_path: Path) -> Path:
    config = tmp_path / "cli.yaml"
    url = gateway.state.settings.database_url
    config.write_text(yaml.safe_dump({"database_url": url}))
    return config


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_api_and_cli_refuse_the_same_input_alike(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: Bad
) -> None:
    key_id = gateway.key_record(gateway.create_key("k")).id
    config = _config(gateway, tmp_path)
    if bad.update:
        ident = key_id if bad.ident == "k" else bad.ident
        response = httpx.patch(f"{gateway.url}/admin/keys/{ident}", json=bad.api, headers=ADMIN)
        argv = ["keys", "update", ident, *bad.cli]
    else:
        response = httpx.post(f"{gateway.url}/admin/keys", json=bad.api, headers=ADMIN)
        argv = ["keys", "create", *bad.cli]
    assert response.status_code == bad.status, response.text
    error = response.json()["error"]
    assert error["param"] == bad.param and error["code"] == bad.code
    assert cli_main([*argv, "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"sluice: {error['message']}\n"
    listed = httpx.get(f"{gateway.url}/admin/keys", headers=ADMIN).json()["data"]
    assert [(k["name"], k["rpm"], k["allowed_ips"]) for k in listed] == [("k", None, [])]


def test_cli_and_api_make_the_same_key(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(gateway, tmp_path)
    fields = {"budget_usd": 2.5, "models": ["test-*"], "rpm": 6, "tpm": 900, "max_concurrent": 2,
              "allowed_ips": ["10.0.0.0/8"], "expires_at": "2031-01-01T00:00:00Z"}  # fmt: skip
    api = httpx.post(f"{gateway.url}/admin/keys", json={"name": "a", **fields}, headers=ADMIN)
    argv = ["keys", "create", "--name", "c", "--budget-usd", "2.5", "--models", "test-*",
            "--rpm", "6", "--tpm", "900", "--max-concurrent", "2", "--allow-ip", "10.0.0.0/8",
            "--expires", "2031-01-01T00:00:00Z", "--json", "--config", str(config)]  # fmt: skip
    assert cli_main(argv) == 0
    cli = orjson.loads(capsys.readouterr().out)
    volatile = {"key", "id", "name", "prefix", "created_at"}
    assert {k: v for k, v in api.json().items() if k not in volatile} == {
        k: v for k, v in cli.items() if k not in volatile
    }
    # CLI update conventions map onto the API's nulls: 0 = no limit, -1 = no budget, '' = never.
    argv = ["keys", "update", "c", "--rpm", "0", "--budget-usd", "-1", "--expires", "",
            "--config", str(config)]  # fmt: skip
    assert cli_main(argv) == 0
    updated = orjson.loads(capsys.readouterr().out)
    assert updated["rpm"] is None and updated["budget_usd"] is None
    assert updated["expires_at"] is None and updated["tpm"] == 900


def test_validated_names_the_field_or_the_body() -> None:
    with pytest.raises(InvalidRequest) as named:
        validated({"name": "x", "rpm": "5"}, KeyCreate)  # strict: a string is not a number
    assert named.value.param == "rpm" and named.value.message.startswith("Invalid 'rpm': ")
    with pytest.raises(InvalidRequest) as whole:
        validated([], KeyUpdate)
    assert whole.value.param is None
    assert whole.value.message.startswith("Invalid request body: ")
    assert validated({"rpm": None}, KeyUpdate).changes().clear_rpm


async def test_each_change_is_announced_with_whether_spend_counters_go(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    announced: list[tuple[str, bool]] = []

    async def announce(record: KeyRecord, spend_dropped: bool) -> None:
        announced.append((record.name, spend_dropped))

    try:
        await upgrade_database(engine)
        service = KeyService(KeyStore(engine), announce)
        await service.create({"name": "a"})
        assert announced == []  # a new key is in nobody's cache
        await service.update("a", {"rpm": 3})
        await service.update("a", {"reset_spent": True})
        assert (await service.set_disabled("a", True)).disabled
        assert (await service.delete("a")).name == "a"
        assert announced == [("a", False), ("a", True), ("a", False), ("a", True)]
        with pytest.raises(NotFound) as missing:
            await service.find("a")
        assert missing.value.code == "key_not_found" and missing.value.http_status == 404
    finally:
        await engine.dispose()
