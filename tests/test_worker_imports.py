"""A serving worker must not load modules it never uses: each costs RSS in every worker
(bench/README.md, memory goal). Checked in a fresh interpreter, after real database work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import asyncio, json, sys
import sluice.app, sluice.workers
from sqlalchemy import text
from sluice.admin.schemas import KeyCreate, parse_body
from sluice.settings import parse_settings
from sluice.storage.db import create_engine

settings = parse_settings(
    {"admin_key": "a" * 32, "channels": [{"name": "a", "type": "openai", "api_key": "k"}]}
)
assert settings.channels[0].api_key.get_secret_value() == "k"
assert parse_body({"name": "n", "rpm": 5}, KeyCreate).rpm == 5

async def main(url):
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        await conn.execute(text("INSERT INTO t VALUES (7)"))
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT x FROM t"))).scalar_one()
    await engine.dispose()
    return value

value = asyncio.run(main(sys.argv[1]))
print(json.dumps({"value": value, "modules": sorted(sys.modules)}))
"""

_NEVER_IN_A_WORKER = (
    "sqlalchemy.orm",  # pulled in by sqlalchemy.ext.asyncio; sluice.storage.aio avoids it
    "sqlalchemy.ext.asyncio",
    "alembic",  # only when migrating
    "mako",
    "websockets",
    "pydantic",  # config and admin bodies are msgspec: pydantic cost ~7 MiB more per worker
)


def test_worker_modules_leave_out_orm_alembic_websockets_and_pydantic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'probe.db'}"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["value"] == 7  # the async facade really ran SQL through aiosqlite
    loaded = set(report["modules"])
    assert "sqlalchemy" in loaded and "aiosqlite" in loaded  # the probe is not vacuous
    unwanted_packages = {"alembic", "mako", "websockets", "pydantic", "pydantic_core"}
    unwanted = sorted(m for m in loaded if m.split(".")[0] in unwanted_packages)
    unwanted += [m for m in _NEVER_IN_A_WORKER if m in loaded and m not in unwanted]
    assert unwanted == []
