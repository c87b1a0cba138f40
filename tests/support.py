"""Test harness: real servers on real loopback sockets, run in a background event-loop thread.

The gateway (uvicorn + the real app) and the fake upstreams live in one thread with its own
event loop, so tests may use blocking clients (the sync OpenAI SDK) and async clients alike.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import uvicorn

from sluice.app import create_app
from sluice.endpoints import EndpointSpec
from sluice.server_protocol import uvicorn_options
from sluice.settings import Settings, parse_settings
from sluice.state import AppState

T = TypeVar("T")

ADMIN_KEY = "sk-admin-test-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Gateway:
    loop: LoopThread
    server: uvicorn.Server
    port: int
    app: Any
    task: Any = None
    admin_key: str = ADMIN_KEY
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.sluice
        return state

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def create_key(self, name: str = "test", **options: Any) -> str:
        new = self.call(self.state.keys.create(name, **options))
        return new.secret

    def key_record(self, secret: str) -> Any:
        from sluice.keys import hash_key

        return self.call(self.state.keys.get_by_hash(hash_key(secret)))

    def flush(self) -> None:
        """Wait for background settlements, then write queued usage rows."""

        async def drain() -> None:
            for _ in range(100):
                if not self.state.background:
                    break
                await asyncio.sleep(0.01)
            await self.state.usage_sink.flush()

        self.call(drain())

    def usage_rows(self, secret: str | None = None) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from sluice.storage.schema import usage

        self.flush()
        key_id = self.key_record(secret).id if secret is not None else None

        async def fetch() -> list[dict[str, Any]]:
            query = select(usage).order_by(usage.c.id)
            if key_id is not None:
                query = query.where(usage.c.key_id == key_id)
            async with self.state.engine.connect() as conn:
                return [dict(r) for r in (await conn.execute(query)).mappings().all()]

        return self.call(fetch())

    def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            try:
                self.call(asyncio.wait_for(_await(self.task), 30))
            except Exception:  # noqa: BLE001 - best effort in teardown
                pass


async def _await(task: Awaitable[Any]) -> None:
    await task


def make_settings(tmp_path: Path, channels: list[dict[str, Any]], **extra: Any) -> Settings:
    raw: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'sluice.db'}",
        "admin_key": ADMIN_KEY,
        "channels": channels,
        "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
    }
    raw.update(extra)
    return parse_settings(raw)


def start_gateway(
    loop: LoopThread,
    settings: Settings,
    local_endpoints: dict[str, str] | None = None,
    endpoint_specs: Sequence[EndpointSpec] | None = None,
) -> Gateway:
    app = create_app(settings, local_endpoints=local_endpoints, endpoint_specs=endpoint_specs)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False,
        **uvicorn_options(settings),  # protocol, deadlines, proxy headers: as `sluice serve`
    )  # fmt: skip
    server = uvicorn.Server(config)
    gateway = Gateway(loop=loop, server=server, port=port, app=app)

    async def launch() -> None:
        gateway.task = asyncio.ensure_future(server.serve())
        for _ in range(500):
            if server.started:
                return
            if gateway.task.done():
                gateway.task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("gateway did not start")

    loop.run(launch())
    return gateway


def json_of(response: Any) -> Any:
    return orjson.loads(response.content if hasattr(response, "content") else response)


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    describe: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``url``/readyz until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited during start-up{describe()}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server was not ready within {timeout_s}s{describe()}")
