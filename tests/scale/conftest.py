"""Fixtures for scale-out tests: a fresh PostgreSQL database per test, a Redis DB number per
session, private redis-server processes that tests may kill, and a seeded database helper."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import require_service, service_reachable, skip_unless_ci
from tests.support import free_port

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


async def admin_connection() -> tuple[asyncpg.Connection, str]:
    last: Exception | None = None
    for user in (os.environ.get("SLUICE_TEST_PG_USER"), "root", "postgres"):
        if not user:
            continue
        try:
            return await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=5
            ), user
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
    raise RuntimeError(f"cannot connect to PostgreSQL as root or postgres: {last}")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A new, empty database for this test (``sluice_test_<random>``), dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    conn, user = await admin_connection()
    name = f"sluice_test_{secrets.token_hex(6)}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    conn, _ = await admin_connection()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_db() -> int:
    """One Redis DB number per session; all keys are also namespaced by random key ids."""
    return 1 + secrets.randbelow(15)


@pytest.fixture
def redis_url(redis_db: int) -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"


@dataclass
class PrivateRedis:
    """A redis-server of our own on a free port, so a test can take it away and bring it back."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not service_reachable("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        skip_unless_ci("redis-server binary not installed")
    server = PrivateRedis(port=free_port(), workdir=tmp_path)
    server.start()
    yield server
    server.kill()


async def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll a sync or async zero-argument callable until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(interval_s)
    return False
