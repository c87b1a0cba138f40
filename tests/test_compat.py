"""The other libraries' internals Sluice relies on (src/sluice/compat/, one module per library):
each test fails loudly, naming the module to fix, when an upgrade changes them."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import tomllib
from collections.abc import AsyncGenerator
from pathlib import Path

import aiohttp
import pytest
import tiktoken
from aiohttp import web
from aiohttp.client_proto import ResponseHandler
from packaging.requirements import Requirement  # pytest depends on packaging
from sqlalchemy import text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import AsyncAdaptedQueuePool

from sluice.compat.aiohttp import request_body, use_idle_timeout
from sluice.compat.logging import skip_caller_lookup
from sluice.compat.sqlalchemy import greenlet_spawn
from sluice.compat.tiktoken import drop_python_ranks
from sluice.storage.aio import create_async_engine
from sluice.storage.db import create_engine
from tests.fakes.server import serve_on_loopback


def _fix(module: str, what: str) -> str:
    return f"{what}: update src/sluice/compat/{module}.py (and its docstring) for this version"


# --- aiohttp ----------------------------------------------------------------------------------


def test_aiohttp_response_handler_still_has_the_timeout_hooks() -> None:
    prop = inspect.getattr_static(ResponseHandler, "read_timeout", None)
    assert isinstance(prop, property) and prop.fset is not None, _fix(
        "aiohttp", "ResponseHandler.read_timeout is no longer a settable property"
    )
    assert callable(getattr(ResponseHandler, "start_timeout", None)), _fix(
        "aiohttp", "ResponseHandler.start_timeout() is gone"
    )


async def test_aiohttp_idle_timeout_replaces_the_first_byte_timeout() -> None:
    """Headers after 0.3 s pass a 1 s first-byte limit; the body then stalls for 2 s and must
    fail on the 0.2 s idle limit set after the headers, well before the 1 s one."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.sleep(2)
        return response

    app = web.Application()
    app.router.add_get("/", slow)
    runner, port = await serve_on_loopback(app)
    try:
        timeout = aiohttp.ClientTimeout(sock_read=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                use_idle_timeout(response, 0.2)
                assert await response.content.readexactly(5) == b"first"
                started = time.monotonic()
                with pytest.raises(asyncio.TimeoutError):
                    await response.content.read()
                waited = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert waited < 0.8, _fix("aiohttp", f"the idle limit did not apply (waited {waited:.2f} s)")


@pytest.mark.parametrize("size", [10, 1024 * 1024, 1024 * 1024 + 1, 5 * 1024 * 1024])
async def test_aiohttp_sends_large_in_memory_bodies_whole_and_without_a_warning(size: int) -> None:
    """aiohttp warns (ResourceWarning, an error under pytest) for a bytes body over 1 MiB; the
    gateway's upstream bodies (8 MiB chat requests, inlined images) must go out whole."""
    received: list[bytes] = []

    async def sink(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/", sink)
    runner, port = await serve_on_loopback(app)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/"
            async with session.post(url, data=request_body(body)) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    assert received == [body], _fix("aiohttp", "the in-memory body payload no longer sends it")


# --- SQLAlchemy -------------------------------------------------------------------------------


async def test_sqlalchemy_greenlet_spawn_bridges_sync_calls() -> None:
    assert inspect.iscoroutinefunction(greenlet_spawn), _fix(
        "sqlalchemy", "sqlalchemy.util.concurrency.greenlet_spawn is no longer a coroutine"
    )
    assert await greenlet_spawn(lambda x: x + 1, 41) == 42


async def test_sqlalchemy_async_driver_urls_give_async_engines(tmp_path: Path) -> None:
    """Without ext.asyncio's private ``_is_async`` flag, the driver in the URL alone must pick
    the async dialect and the asyncio pool (for asyncpg too: checked without connecting)."""
    for url in (f"sqlite:///{tmp_path / 'c.db'}", "postgresql://u@127.0.0.1:1/db"):
        engine = create_engine(url)
        try:
            assert engine.dialect.is_async, _fix("sqlalchemy", f"{url}: dialect is not async")
            pool = engine.sync_engine.pool
            assert isinstance(pool, AsyncAdaptedQueuePool), _fix("sqlalchemy", f"pool {pool}")
        finally:
            await engine.dispose()
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_sqlalchemy_sync_driver_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="not an asyncio driver"):
        create_async_engine(f"sqlite+pysqlite:///{tmp_path / 'sync.db'}")


# --- tiktoken ---------------------------------------------------------------------------------


def _tiny_encoding() -> tiktoken.Encoding:
    ranks = {bytes([i]): i for i in range(256)}
    ranks[b"ab"] = 256
    return tiktoken.Encoding(
        name="compat-test", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={}
    )


def test_tiktoken_python_ranks_can_be_dropped_and_encoding_still_works() -> None:
    encoding = _tiny_encoding()
    before = encoding.encode("abc ab")
    assert drop_python_ranks(encoding), _fix(
        "tiktoken", "Encoding._mergeable_ranks is no longer a dict (the ~16 MB saving is lost)"
    )
    assert encoding.encode("abc ab") == before == [256, 99, 32, 256], _fix(
        "tiktoken", "encoding changed after dropping the Python rank table"
    )
    assert encoding.decode(before) == "abc ab"


# --- logging ----------------------------------------------------------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logging_srcfile_switch_still_skips_the_caller_lookup() -> None:
    assert hasattr(logging, "_srcfile"), _fix("logging", "logging._srcfile is gone")
    logger, keep = logging.getLogger("sluice.compat.test"), _Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    saved = logging._srcfile
    try:
        logger.info("with lookup")
        skip_caller_lookup()
        logger.info("without lookup")
    finally:
        logging._srcfile = saved
        logger.removeHandler(keep)
    with_lookup, without = keep.records
    assert with_lookup.pathname == __file__
    assert without.pathname == "(unknown file)" and without.getMessage() == "without lookup", _fix(
        "logging", "setting logging._srcfile to None no longer skips the caller lookup"
    )


# --- dependency bounds ------------------------------------------------------------------------


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
            f"{requirement.name}: add an upper bound (below the next major) in pyproject.toml"
        )


# --- uvicorn ----------------------------------------------------------------------------------


def test_uvicorn_httptools_protocol_still_has_what_the_deadline_protocol_uses() -> None:
    """``sluice/server_protocol.py`` subclasses uvicorn's httptools protocol (header and body
    deadlines, the connection cap): the hooks it overrides and the attributes it reads."""
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    hooks = ["connection_made", "connection_lost", "on_message_begin", "on_headers_complete",
             "on_message_complete"]  # fmt: skip
    missing = [name for name in hooks if not callable(getattr(HttpToolsProtocol, name, None))]
    source = inspect.getsource(HttpToolsProtocol)
    for name in ("connections", "tasks", "flow", "cycle", "scope", "app", "limit_concurrency",
                 "loop", "transport"):  # fmt: skip
        if f"self.{name} =" not in source and f"self.{name}: " not in source:
            missing.append(f"self.{name}")
    if "read_paused" not in inspect.getsource(FlowControl):
        missing.append("FlowControl.read_paused")
    cycle = inspect.getsource(RequestResponseCycle)
    missing += [f"cycle.{n}" for n in ("response_started", "response_complete") if n not in cycle]
    assert not missing, f"gone: {missing}: update src/sluice/server_protocol.py for this uvicorn"


# --- starlette ---------------------------------------------------------------------------------


def test_starlette_multipart_parser_still_tracks_the_files_to_close() -> None:
    """``sluice/relay/multipart.py`` closes a half-read form's spooled files through the list
    Starlette's parser keeps for its own error path."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    async def nothing() -> AsyncGenerator[bytes, None]:
        yield b""

    parser = MultiPartParser(
        Headers({"content-type": "multipart/form-data; boundary=x"}), nothing()
    )
    assert isinstance(parser._files_to_close_on_error, list)
