"""The lean pipelined Redis connection behind the hot path's script calls (redis_backend/resp.py).

Real Redis where the behaviour is Redis's (replies, errors, NOSCRIPT, AUTH, SELECT); a scripted
RESP server on loopback where the point is a reply arriving late or a connection dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluice.admission.together import both_settled
from sluice.redis_backend.client import RedisBackend, RedisUnavailable
from sluice.redis_backend.resp import RespConnectionParams, RespPipe, pack_command
from tests.conftest import skip_unless_ci
from tests.scale.conftest import PrivateRedis
from tests.support import free_port

_ECHO_COUNT = "return {ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}"


def test_commands_are_packed_as_resp_bulk_arrays() -> None:
    assert pack_command(["EVALSHA", "ab", 1, "k", -3, 2.5, b"\x00"]) == (
        b"*7\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$2\r\n-3\r\n"
        b"$3\r\n2.5\r\n$1\r\n\x00\r\n"
    )
    assert pack_command(["SET", "ключ", ""]) == (
        b"*3\r\n$3\r\nSET\r\n$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n$0\r\n\r\n"
    )
    with pytest.raises(TypeError):
        pack_command(["SET", "k", True])
    with pytest.raises(TypeError):
        pack_command(["SET", "k", None])


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    created = RedisBackend(redis_url)
    await created.start()
    yield created
    await created.close()


async def test_concurrent_script_calls_each_get_their_own_reply(backend: RedisBackend) -> None:
    assert backend.pipelines_directly, "a plain TCP URL takes the lean path"
    script = backend.client.register_script(_ECHO_COUNT)
    key = f"test:resp:{uuid.uuid4().hex}"
    await backend.script(script, [key + ":warm"], ["load", 0])  # loaded: no NOSCRIPT retries
    replies = await asyncio.gather(
        *(backend.script(script, [key], [f"call-{i}", i]) for i in range(300))
    )
    assert [reply[0] for reply in replies] == [f"call-{i}".encode() for i in range(300)]
    # One batch, applied in order: the running totals are the prefix sums.
    assert [reply[1] for reply in replies] == [i * (i + 1) // 2 for i in range(300)]
    total = await backend.client.get(key)
    assert total is not None and int(total) == sum(range(300))
    await backend.client.delete(key, key + ":warm")


async def test_an_error_reply_fails_only_its_own_call(backend: RedisBackend) -> None:
    good = backend.client.register_script(_ECHO_COUNT)
    bad = backend.client.register_script("return redis.error_reply('refused by script')")
    key = f"test:resp:{uuid.uuid4().hex}"
    results = await asyncio.gather(
        backend.script(good, [key], ["a", 1]),
        backend.script(bad, [], []),
        backend.script(good, [key], ["b", 1]),
        return_exceptions=True,
    )
    assert results[0] == [b"a", 1] and results[2] == [b"b", 2]
    assert isinstance(results[1], ResponseError) and "refused by script" in str(results[1])
    assert backend.healthy, "a script's error is not an outage"
    await backend.client.delete(key)


async def test_scripts_unknown_to_redis_are_loaded_on_first_use(backend: RedisBackend) -> None:
    script = backend.client.register_script(_ECHO_COUNT + " -- " + uuid.uuid4().hex)
    key = f"test:resp:{uuid.uuid4().hex}"
    assert await backend.script(script, [key], ["first", 5]) == [b"first", 5]
    await backend.client.script_flush()  # as after a Redis restart
    both = await asyncio.gather(
        backend.script(script, [key], ["x", 1]), backend.script(script, [key], ["y", 1])
    )
    assert sorted(reply[1] for reply in both) == [6, 7]
    await backend.client.delete(key)


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        skip_unless_ci("redis-server binary not installed")
    server = PrivateRedis(
        port=free_port(), workdir=tmp_path, extra_args=("--requirepass", "s3cret-pass")
    )
    server.start()
    yield server
    server.kill()


async def test_password_and_database_from_the_url_are_used(
    redis_with_password: PrivateRedis,
) -> None:
    port = redis_with_password.port
    backend = RedisBackend(f"redis://:s3cret-pass@127.0.0.1:{port}/3")
    await backend.start()
    try:
        assert backend.pipelines_directly
        script = backend.client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
        assert await backend.script(script, ["written-by-script"], ["yes"]) == b"OK"
        check = redis.Redis(host="127.0.0.1", port=port, db=3, password="s3cret-pass")
        assert await check.get("written-by-script") == b"yes"
        await check.aclose()
    finally:
        await backend.close()

    wrong = RedisBackend(f"redis://:not-the-pass@127.0.0.1:{port}/3", probe_interval_s=60)
    script = wrong.client.register_script("return 1")
    try:
        with pytest.raises(RedisUnavailable) as refused:
            await wrong.script(script, [], [])
        assert "not-the-pass" not in str(refused.value)
        assert not wrong.healthy
    finally:
        await wrong.close()


class _ScriptedResp:
    """A loopback server that reads commands and answers as each test tells it to."""

    def __init__(self) -> None:
        self.commands: asyncio.Queue[bytes] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> _ScriptedResp:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                await self.commands.put(data)

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def scripted() -> AsyncIterator[_ScriptedResp]:
    server = await _ScriptedResp().start()
    yield server
    await server.stop()


async def test_a_reply_after_its_waiter_gave_up_does_not_shift_the_others(
    scripted: _ScriptedResp,
) -> None:
    pipe = RespPipe(RespConnectionParams("127.0.0.1", scripted.port))
    await pipe.connect()
    loop = asyncio.get_running_loop()
    abandoned, waiting = loop.create_future(), loop.create_future()
    pipe.send([pack_command(["GET", "a"])], [abandoned])
    await scripted.commands.get()
    abandoned.cancel()  # the caller timed out; its reply is still on the way
    pipe.send([pack_command(["GET", "b"])], [waiting])
    await scripted.commands.get()
    scripted.writers[0].write(b"$7\r\nreply-a\r\n$7\r\nreply-b\r\n")
    assert await asyncio.wait_for(waiting, 2) == b"reply-b"
    pipe.close()


async def test_a_dropped_connection_fails_waiters_at_once_and_reconnects(
    scripted: _ScriptedResp,
) -> None:
    pipe = RespPipe(RespConnectionParams("127.0.0.1", scripted.port))
    await pipe.connect()
    waiter = asyncio.get_running_loop().create_future()
    pipe.send([pack_command(["PING"])], [waiter])
    await scripted.commands.get()
    scripted.writers[0].close()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiter, 2)
    assert not pipe.connected
    await pipe.connect()  # the next batch gets a fresh connection
    again = asyncio.get_running_loop().create_future()
    pipe.send([pack_command(["PING"])], [again])
    assert await scripted.commands.get() == b"*1\r\n$4\r\nPING\r\n"
    scripted.writers[1].write(b"+PONG\r\n")
    assert await asyncio.wait_for(again, 2) == b"PONG"
    pipe.close()


async def test_garbage_from_the_server_is_a_connection_error(scripted: _ScriptedResp) -> None:
    pipe = RespPipe(RespConnectionParams("127.0.0.1", scripted.port))
    await pipe.connect()
    waiter = asyncio.get_running_loop().create_future()
    pipe.send([pack_command(["PING"])], [waiter])
    await scripted.commands.get()
    scripted.writers[0].write(b"?not resp\r\n")
    with pytest.raises(RedisConnectionError, match="protocol error"):
        await asyncio.wait_for(waiter, 2)
    assert not pipe.connected or not pipe.pending()


async def test_nothing_listening_is_a_connection_error() -> None:
    pipe = RespPipe(RespConnectionParams("127.0.0.1", free_port(), connect_timeout_s=0.5))
    with pytest.raises(RedisConnectionError, match="Cannot connect"):
        await pipe.connect()
    assert not pipe.connected


async def test_an_unanswered_command_times_out_and_resets_the_connection(
    scripted: _ScriptedResp,
) -> None:
    pipe = RespPipe(RespConnectionParams("127.0.0.1", scripted.port, reply_timeout_s=0.2))
    await pipe.connect()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    pipe.send([pack_command(["GET", "a"])], [first])
    await asyncio.sleep(0.1)
    pipe.send([pack_command(["GET", "b"])], [second])  # younger, but behind the stuck one
    started = loop.time()
    with pytest.raises(RedisTimeoutError):
        await asyncio.wait_for(first, 2)
    assert loop.time() - started < 0.3  # 0.2 s deadline, checked every 0.05 s
    with pytest.raises(RedisTimeoutError):
        await asyncio.wait_for(second, 2)
    assert not pipe.connected, "a connection that stopped answering is not reused"


async def test_a_backend_whose_redis_hangs_falls_back_instead_of_waiting(
    scripted: _ScriptedResp,
) -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{scripted.port}/0", op_timeout_s=0.1)
    script = backend.client.register_script("return 1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RedisUnavailable):
        await backend.script(script, [], [])
    assert loop.time() - started < 0.5
    assert not backend.healthy
    await backend.close()


async def test_two_scripts_started_together_share_one_write(scripted: _ScriptedResp) -> None:
    """Admission and settlement each run two scripts through ``both_settled``; they must leave
    in one write (one round trip), not one each."""
    backend = RedisBackend(f"redis://127.0.0.1:{scripted.port}/0")
    first = backend.client.register_script("return 1")
    second = backend.client.register_script("return 2")
    warm = asyncio.ensure_future(backend.script(first, ["k0"], [0]))  # connects the pipe
    await asyncio.wait_for(scripted.commands.get(), 2)
    scripted.writers[0].write(b":0\r\n")
    assert await asyncio.wait_for(warm, 2) == 0
    running = asyncio.ensure_future(
        both_settled(backend.script(first, ["k1"], [1]), backend.script(second, ["k2"], [2]))
    )
    data = await asyncio.wait_for(scripted.commands.get(), 2)
    assert data.count(b"EVALSHA") == 2, data
    scripted.writers[0].write(b":1\r\n:2\r\n")
    assert await asyncio.wait_for(running, 2) == (1, 2)
    await backend.close()


async def test_unix_socket_urls_keep_redis_pys_pipeline(tmp_path: Path) -> None:
    """The lean connection speaks plain TCP only; other URLs batch through redis-py, with the
    same replies, errors and NOSCRIPT reload."""
    if shutil.which("redis-server") is None:
        skip_unless_ci("redis-server binary not installed")
    sock = tmp_path / "redis.sock"
    server = PrivateRedis(
        port=free_port(), workdir=tmp_path, extra_args=("--unixsocket", str(sock))
    )
    server.start()
    backend = RedisBackend(f"unix://{sock}")
    try:
        await backend.start()
        assert not backend.pipelines_directly
        script = backend.client.register_script(_ECHO_COUNT)
        bad = backend.client.register_script("return redis.error_reply('refused by script')")
        assert await backend.script(script, ["k"], ["load", 0]) == [b"load", 0]  # unknown: loaded
        results = await asyncio.gather(
            backend.script(script, ["k"], ["a", 1]),
            backend.script(bad, [], []),
            backend.script(script, ["k"], ["b", 2]),
            return_exceptions=True,
        )
        assert results[0] == [b"a", 1] and results[2] == [b"b", 3]
        assert isinstance(results[1], ResponseError)
        await backend.client.script_flush()
        assert await backend.script(script, ["k"], ["c", 1]) == [b"c", 4]
    finally:
        await backend.close()
        server.kill()
