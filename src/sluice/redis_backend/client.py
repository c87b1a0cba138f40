"""The Redis connection shared by the limiter, the ledger and key invalidation.

Redis is an accelerator, not the source of truth: when it stops answering, ``RedisBackend``
marks itself down with one log line and every caller switches to its fallback at once (no
per-request connect timeouts while Redis is away). A probe task pings every second and flips
back on recovery, running the registered recovery hooks (for example: drop budget counters
that missed settlements during the outage so they are re-seeded from the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as redis
from redis.asyncio.connection import Connection as TcpConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluice.redis_backend.resp import RespConnectionParams, RespPipe, pack_command

__all__ = ["RedisBackend", "RedisUnavailable", "key_tag", "OUTAGE_ERRORS"]

log = logging.getLogger("sluice.redis")

# Errors that mean "Redis is not there right now", as opposed to a bug in a script.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class _Pending:
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]

    def evalsha(self) -> list[Any]:
        return ["EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args]


def _fail_all(batch: list[_Pending], exc: BaseException) -> None:
    """Every waiter of a batch that could not be sent hears why; nothing is left hanging."""
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


class RedisUnavailable(Exception):
    """Redis is down (or marked down): the caller must use its fallback."""


def key_tag(key_id: str) -> str:
    """Hash-tagged prefix: every Redis key of one API key lands in one Cluster slot, so a Lua
    script may touch several of them atomically."""
    return f"{{sluice:key:{key_id}}}"


class RedisBackend:
    def __init__(
        self,
        url: str,
        policy: Literal["open", "closed"] = "open",
        *,
        op_timeout_s: float = 1.0,
        probe_interval_s: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self.policy = policy
        self._op_timeout_s = op_timeout_s
        self._probe_interval_s = probe_interval_s
        # A bounded, blocking pool: a burst of 200 requests queues for 64 connections instead
        # of opening 200 sockets at once (connect timeouts under load looked like an outage).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=op_timeout_s * 2,
            socket_connect_timeout=op_timeout_s,
            socket_timeout=op_timeout_s,
        )
        self.client: redis.Redis = redis.Redis.from_pool(pool)
        # Hot-path script calls go through one lean pipelined connection (resp.py) when Redis
        # is reached over plain TCP; TLS and Unix sockets keep redis-py's pipeline.
        self._pipe = _lean_pipe(pool, op_timeout_s)
        self.healthy = True
        self._recovery_hooks: list[Callable[[], Awaitable[None]]] = []
        self._probe: asyncio.Task[None] | None = None
        self._batch: list[_Pending] = []  # script calls waiting for this loop turn's pipeline
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def pipelines_directly(self) -> bool:
        """Whether script calls use the lean pipelined connection (plain TCP) or redis-py's."""
        return self._pipe is not None

    def on_recovery(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._recovery_hooks.append(hook)

    async def start(self) -> None:
        """Check Redis once and start the recovery probe; a dead Redis does not stop startup."""
        try:
            await asyncio.wait_for(self.client.ping(), self._op_timeout_s * 2)
        except OUTAGE_ERRORS as exc:
            self.mark_down(exc)
        if self._probe is None:
            self._probe = asyncio.create_task(self._probe_loop(), name="redis-probe")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        in_flight: list[asyncio.Future[Any]] = [*self._batches]
        if self._pipe is not None:
            in_flight += self._pipe.pending()
        if in_flight:  # settlements already sent: let them land
            await asyncio.wait(in_flight, timeout=self._op_timeout_s * 2)
        if self._pipe is not None:
            self._pipe.close()
        await self.client.aclose()

    def mark_down(self, exc: BaseException) -> None:
        if self._pipe is not None:
            self._pipe.reset()  # after a timeout the connection is suspect: start afresh
        if self.healthy:
            fallback = (
                "per-replica rate limits"
                if self.policy == "open"
                else "503 for keys with rate limits"
            )
            log.error(
                "redis unreachable at %s (%s: %s); using %s and database-backed budgets "
                "until it returns",
                _redact(self.url),
                type(exc).__name__,
                exc,
                fallback,
            )
        self.healthy = False

    async def _mark_up(self) -> None:
        if self.healthy:
            return
        self.healthy = True
        log.warning(
            "redis reachable again at %s; shared limits and budgets resumed", _redact(self.url)
        )
        for hook in self._recovery_hooks:
            try:
                await hook()
            except OUTAGE_ERRORS as exc:
                self.mark_down(exc)
                return

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            if self.healthy:
                continue
            try:
                await asyncio.wait_for(self.client.ping(), self._op_timeout_s * 2)
            except OUTAGE_ERRORS:
                continue
            await self._mark_up()

    async def call(self, work: Callable[[], Awaitable[Any]], *, timed: bool = True) -> Any:
        """Run one Redis operation; raises ``RedisUnavailable`` when Redis is (marked) down.

        ``timed=False`` for work already bounded elsewhere (the lean pipe's reply watchdog)."""
        if not self.healthy:
            raise RedisUnavailable("redis is marked down")
        try:
            # asyncio.timeout, not wait_for: no extra task per call (3.11's wait_for makes one).
            async with asyncio.timeout(self._op_timeout_s * 2 if timed else None):
                return await work()
        except OUTAGE_ERRORS as exc:
            self.mark_down(exc)
            raise RedisUnavailable(str(exc)) from exc

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script, sharing one pipeline with every other script call made during the
        same event-loop turn (auto-pipelining).

        Under concurrency many requests admit and settle at once; each paying its own pool
        checkout, write and read costs several times what one batched round trip does. Calls
        made alone still go out at once (the batch is sent on the next loop iteration).
        Scripts are independent and atomic each; nothing relies on their relative order.
        """
        try:
            # The lean pipe bounds every reply with its watchdog: no timer per call there.
            return await self.call(
                lambda: self._enqueue(script, keys, args), timed=self._pipe is None
            )
        except NoScriptError:
            # First use on this Redis (or after SCRIPT FLUSH / a restart): redis-py's script
            # object loads it and runs it; later calls find it cached.
            return await self.call(lambda: script(keys=keys, args=args))

    def _enqueue(
        self, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._batch.append(_Pending(script, keys, args, future))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return future

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._pipe is not None and self._pipe.connected:
            self._write_batch(self._pipe, batch)  # the common case: no task at all
            return
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    @staticmethod
    def _write_batch(pipe: RespPipe, batch: list[_Pending]) -> None:
        pipe.send([pack_command(item.evalsha()) for item in batch], [i.future for i in batch])

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if self._pipe is not None:
            try:
                await self._pipe.connect()
            except BaseException as exc:
                _fail_all(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._write_batch(self._pipe, batch)
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for item in batch:
                    pipe.execute_command(*item.evalsha())
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            _fail_all(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        # A NoScriptError goes to its waiter like any reply: ``script`` loads and reruns it.
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)


def _lean_pipe(pool: redis.BlockingConnectionPool, op_timeout_s: float) -> RespPipe | None:
    if pool.connection_class is not TcpConnection:
        return None
    kwargs = pool.connection_kwargs
    if kwargs.get("credential_provider") is not None or kwargs.get("protocol") not in (None, 2):
        return None
    return RespPipe(
        RespConnectionParams(
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0)),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            connect_timeout_s=op_timeout_s,
            reply_timeout_s=op_timeout_s * 2,  # what ``call`` allows an operation
        )
    )


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
