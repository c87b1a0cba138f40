"""One pipelined RESP connection for the hot path's Lua script calls.

Every relayed request runs two scripts at admission and two at settlement. Through redis-py's
asyncio pipeline each batch costs a task, a pool checkout, a ``Pipeline`` object and
per-command response callbacks, a large share of a request's worker CPU (figures:
docs/architecture.md, "The hot path"). Here a batch
is one ``transport.write`` of pre-packed commands, and replies are parsed by hiredis (the C
parser redis-py itself uses) in ``data_received``, resolving waiters in order: no task, no
pool, no per-command Python beyond packing.

Only plain TCP connections take this path (``RedisBackend`` keeps redis-py for TLS, Unix
sockets and everything that is not a hot-path script call). Replies come back in request
order on one connection, so a waiter that gave up (timeout) just has its reply dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RespConnectionParams", "RespPipe", "pack_command"]


@dataclass(frozen=True, slots=True)
class RespConnectionParams:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 1.0
    reply_timeout_s: float = 2.0  # a reply later than this resets the connection


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # bool is an int: refuse the surprise
        raise TypeError("booleans are not Redis arguments")
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def pack_command(args: Sequence[Any]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _encode(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def _as_exception(reply: ResponseError) -> ResponseError:
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return NoScriptError(text)
    return reply


class _RespProtocol(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[_RespProtocol, Exception | None], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[tuple[float, asyncio.Future[Any]]] = deque()  # (deadline, waiter)
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                _, waiter = self.waiters.popleft()
                if not waiter.done():
                    if isinstance(reply, ResponseError):
                        waiter.set_exception(_as_exception(reply))
                    else:
                        waiter.set_result(reply)
                reply = reader.gets()
        except (InvalidResponse, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail_all(RedisConnectionError(f"Redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail_all(RedisConnectionError("Connection to Redis lost."))
        self._on_lost(self, exc)

    def fail_all(self, exc: Exception) -> None:
        while self.waiters:
            _, waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


class RespPipe:
    """Lazily connected; reconnects on the next send after the connection is lost or reset.

    Waiters need no timer each: a watchdog, armed while replies are outstanding, resets the
    connection (every waiter then gets ``TimeoutError``) once the oldest is overdue.
    """

    def __init__(self, params: RespConnectionParams) -> None:
        self._params = params
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Future[_RespProtocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def send(self, commands: Sequence[bytes], waiters: Sequence[asyncio.Future[Any]]) -> None:
        """Write packed commands in one write; each waiter gets its command's reply (an error
        reply as ``ResponseError``, ``NoScriptError`` for NOSCRIPT). Requires ``connected``."""
        assert self._protocol is not None
        self._send_on(self._protocol, commands, waiters, self._params.reply_timeout_s)
        if self._watchdog is None:
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        interval = self._params.reply_timeout_s / 4
        self._watchdog = asyncio.get_running_loop().call_later(interval, self._check_overdue)

    def _check_overdue(self) -> None:
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or not protocol.waiters:
            return
        if protocol.waiters[0][0] <= asyncio.get_running_loop().time():
            self.reset(RedisTimeoutError("Redis did not answer in time."))
        else:
            self._arm_watchdog()

    async def connect(self) -> None:
        """Connect (once, however many callers wait) and authenticate / select the database."""
        if self._protocol is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                protocol = await self._open()
            except BaseException as exc:
                self._connecting.set_exception(
                    exc if isinstance(exc, Exception) else RedisConnectionError(str(exc))
                )
                self._connecting.exception()  # retrieved: no "never retrieved" warning
                self._connecting = None
                raise
            self._protocol = protocol
            self._connecting.set_result(protocol)
            self._connecting = None
            return
        await asyncio.shield(self._connecting)

    async def _open(self) -> _RespProtocol:
        params = self._params
        loop = asyncio.get_running_loop()
        protocol: _RespProtocol | None = None
        try:
            async with asyncio.timeout(params.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _RespProtocol(self._lost), params.host, params.port
                )
                handshake: list[bytes] = []
                if params.password is not None:
                    auth = ["AUTH", params.password]
                    if params.username:
                        auth.insert(1, params.username)
                    handshake.append(pack_command(auth))
                if params.db:
                    handshake.append(pack_command(["SELECT", params.db]))
                if handshake:
                    futures = [loop.create_future() for _ in handshake]
                    self._send_on(protocol, handshake, futures, params.connect_timeout_s)
                    for reply in await asyncio.gather(*futures, return_exceptions=True):
                        if isinstance(reply, BaseException):
                            raise reply
        except BaseException as exc:
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            if isinstance(exc, ResponseError):  # e.g. WRONGPASS: Redis's words, no secret
                raise RedisConnectionError(f"Redis refused the connection: {exc}") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Cannot connect to Redis: {exc}") from None
            raise
        return protocol

    @staticmethod
    def _send_on(
        protocol: _RespProtocol,
        commands: Sequence[bytes],
        waiters: Sequence[asyncio.Future[Any]],
        timeout_s: float,
    ) -> None:
        assert protocol.transport is not None
        deadline = asyncio.get_running_loop().time() + timeout_s
        protocol.waiters.extend([(deadline, waiter) for waiter in waiters])
        protocol.transport.write(b"".join(commands))

    def _lost(self, protocol: _RespProtocol, exc: Exception | None) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def reset(self, error: Exception | None = None) -> None:
        """Drop the connection (a timeout makes it suspect); waiters get ``error``."""
        protocol, self._protocol = self._protocol, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if protocol is not None:
            protocol.fail_all(error or RedisConnectionError("Redis connection reset."))
            if protocol.transport is not None:
                protocol.transport.abort()

    def pending(self) -> list[asyncio.Future[Any]]:
        return [] if self._protocol is None else [waiter for _, waiter in self._protocol.waiters]

    def close(self) -> None:
        self.reset()
