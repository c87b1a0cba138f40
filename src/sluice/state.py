"""AppState: everything a worker holds, built in the lifespan and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.auth import KeyCache
from sluice.limits import MemoryRateLimiter, RateLimiter
from sluice.metering.pricing import PriceBook
from sluice.metering.quota import BudgetLedger, LocalLedger
from sluice.metering.tokens import TokenCounter
from sluice.routing import AlwaysHealthy, ChannelHealth, Router, build_router
from sluice.settings import Settings
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.usage_queries import UsageQueries
from sluice.storage.usage_sink import UsageSink
from sluice.upstream import Timeouts, UpstreamClient, create_session

__all__ = ["AppState", "build_state"]

log = logging.getLogger("sluice")


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    keys: KeyStore
    key_cache: KeyCache
    usage_sink: UsageSink
    usage: UsageQueries
    ledger: BudgetLedger
    limiter: RateLimiter
    prices: PriceBook
    router: Router
    health: ChannelHealth
    session: aiohttp.ClientSession
    upstream: UpstreamClient
    tokens: TokenCounter
    admin_key_hash: str  # sha256 hex of the admin key
    local_endpoints: Mapping[str, str]
    timeouts: Timeouts
    background: set[asyncio.Task[None]] = field(default_factory=set)
    started_at: float = field(default_factory=time.time)
    in_flight: int = 0

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def health_snapshot(self, channel: str) -> dict[str, Any]:
        snapshot = getattr(self.health, "snapshot", None)
        return snapshot(channel) if callable(snapshot) else {"state": "closed"}

    def apply_settings(self, settings: Settings) -> None:
        """Hot reload: channels, prices, limits. Database and Redis URLs need a restart."""
        self.settings = settings
        self.prices = PriceBook(settings.pricing)
        self.router = build_router(settings, self.local_endpoints)
        self.timeouts = _timeouts(settings)

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(set(self.background), timeout=self.settings.shutdown_grace_s)
        await self.usage_sink.close()
        await self.session.close()
        await self.engine.dispose()


def _timeouts(settings: Settings) -> Timeouts:
    t = settings.timeouts
    return Timeouts(connect_s=t.connect_s, first_byte_s=t.first_byte_s, idle_s=t.idle_s)


def build_state(
    settings: Settings, local_endpoints: Mapping[str, str], admin_key_hash: str
) -> AppState:
    engine = create_engine(settings.database_url)
    keys = KeyStore(engine)
    session = create_session()
    usage_cfg = settings.usage
    return AppState(
        settings=settings,
        engine=engine,
        keys=keys,
        key_cache=KeyCache(keys.get_by_hash, ttl_s=settings.limits.key_cache_ttl_s),
        usage_sink=UsageSink(
            engine,
            interval_s=usage_cfg.batch_interval_ms / 1000,
            batch_rows=usage_cfg.batch_max_rows,
            buffer_rows=usage_cfg.buffer_max_rows,
        ),
        usage=UsageQueries(engine),
        ledger=LocalLedger(),
        limiter=MemoryRateLimiter(),
        prices=PriceBook(settings.pricing),
        router=build_router(settings, local_endpoints),
        health=AlwaysHealthy(),
        session=session,
        upstream=UpstreamClient(session),
        tokens=TokenCounter(),
        admin_key_hash=admin_key_hash,
        local_endpoints=local_endpoints,
        timeouts=_timeouts(settings),
    )
