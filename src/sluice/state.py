"""AppState: everything a worker holds, built in the lifespan and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from sqlalchemy.exc import SQLAlchemyError

from sluice.admission.backend import AdmissionBackend
from sluice.admission.local import LocalAdmission
from sluice.auth import KeyCache
from sluice.auth_throttle import FailureThrottle
from sluice.endpoints.spec import EndpointRegistry
from sluice.errors import ServiceUnavailable
from sluice.health import STATE_CODES, CircuitState, MemoryChannelHealth, ProbeGate
from sluice.key_watch import KeyChangeWatcher
from sluice.keys import KeyRecord
from sluice.metering.pricing import PriceBook
from sluice.metering.quota import BudgetLedger
from sluice.metering.tokens import TokenCounter
from sluice.observability.metrics import Metrics
from sluice.offload import Offload
from sluice.redis_backend.invalidation import KeyChange
from sluice.redis_backend.wiring import RedisServices
from sluice.routing import ChannelHealth, Router, build_router
from sluice.settings import ChannelConfig, Settings
from sluice.storage.aio import AsyncEngine
from sluice.storage.db import create_engine
from sluice.storage.key_changes import KeyChangeRow
from sluice.storage.key_store import KeyStore
from sluice.storage.usage_queries import UsageQueries
from sluice.storage.usage_sink import UsageSink
from sluice.upstream import Timeouts, Upstream, UpstreamClient, create_session

if TYPE_CHECKING:
    from sluice.runtime_channels import RuntimeChannels

__all__ = ["AppState", "build_state"]

log = logging.getLogger("sluice")

_KEY_LOAD_TIMEOUT_S = 5.0
# After shutdown cancels what is still running, how long those tasks get to settle.
_SETTLE_AFTER_CANCEL_S = 5.0


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    keys: KeyStore
    key_cache: KeyCache
    usage_sink: UsageSink
    usage: UsageQueries
    ledger: BudgetLedger  # the admission backend's: spend as the admin API reports it
    prices: PriceBook
    router: Router
    health: ChannelHealth
    session: aiohttp.ClientSession
    upstream: Upstream  # UpstreamClient; tests may put sluice.upstream_mock.MockUpstream
    tokens: TokenCounter
    admin_key_hash: str  # sha256 hex of the admin key
    # Wrong admin or metrics tokens per client address (unknown API keys: key_cache's own).
    admin_throttle: FailureThrottle
    local_endpoints: Mapping[str, str]
    endpoints: EndpointRegistry  # the endpoint specs this app serves
    timeouts: Timeouts
    metrics: Metrics
    # Limits, budget and concurrency: in-process, or shared through Redis (sluice.admission).
    admission: AdmissionBackend
    background: set[asyncio.Task[None]] = field(default_factory=set)
    started_at: float = field(default_factory=time.time)
    in_flight: int = 0
    channel_timeouts: dict[str, Timeouts] = field(default_factory=dict)
    redis: RedisServices | None = None  # set when redis_url is configured
    # Confirmation probes of channels that answered 401/402/403 (sluice.health_probe).
    probe_gate: ProbeGate = field(default_factory=ProbeGate)
    offload: Offload = field(default_factory=Offload)  # large bodies parsed/counted off the loop
    key_watch: KeyChangeWatcher | None = None  # polls the key change log (set by start)
    # Channels created at runtime (sluice.runtime_channels), routed after the config file's.
    runtime_channels: list[ChannelConfig] = field(default_factory=list)
    channel_service: RuntimeChannels | None = None  # set by the app's lifespan

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
        self.router = build_router(self.routed_settings(), self.local_endpoints)
        self.timeouts = _timeouts(settings)
        self.channel_timeouts = {}
        self.admission.default_max_concurrent = settings.limits.default_max_concurrent

    def routed_settings(self) -> Settings:
        """The settings with the runtime channels after the config file's (whose names win)."""
        if not self.runtime_channels:
            return self.settings
        taken = {c.name for c in self.settings.channels}
        extra = [c for c in self.runtime_channels if c.name not in taken]
        return msgspec.structs.replace(self.settings, channels=[*self.settings.channels, *extra])

    def all_channels(self) -> list[ChannelConfig]:
        return list(self.routed_settings().channels)

    def set_runtime_channels(self, channels: list[ChannelConfig]) -> None:
        """Runtime channels changed: new requests route with them from now on."""
        self.runtime_channels = list(channels)
        self.router = build_router(self.routed_settings(), self.local_endpoints)
        self.channel_timeouts = {}

    def timeouts_for(self, channel: ChannelConfig) -> Timeouts:
        """The channel's own timeouts where it sets them, the global defaults otherwise."""
        found = self.channel_timeouts.get(channel.name)
        if found is None:
            base = self.timeouts
            found = Timeouts(
                connect_s=channel.connect_timeout_s or base.connect_s,
                first_byte_s=channel.first_byte_timeout_s or base.first_byte_s,
                idle_s=channel.idle_timeout_s or base.idle_s,
                total_s=channel.timeout_s or base.total_s,
            )
            self.channel_timeouts[channel.name] = found
        return found

    async def start(self) -> None:
        """Lifespan start: background writers and, with Redis, the shared services."""
        self.usage_sink.start()
        self.offload.start()
        if self.redis is not None:
            await self.redis.start(self.key_cache)
        self.key_watch = KeyChangeWatcher(
            self.engine, self.key_changed_elsewhere, self.settings.limits.key_change_poll_s
        )
        await self.key_watch.start()

    async def key_changed(self, record: KeyRecord) -> None:
        """A key was changed here: drop it from this cache and tell the other replicas."""
        self.key_cache.invalidate(record.key_hash)
        if self.redis is not None:
            await self.redis.publish_key_change(record.key_hash, record.id)

    async def key_changed_elsewhere(self, change: KeyChangeRow | None) -> None:
        """The change log shows a key changed (by the CLI, another worker, this one): drop it
        from this cache; None means any key may have changed."""
        key_hash = None if change is None else change.key_hash
        self.key_cache.invalidate(key_hash)
        if self.redis is not None:  # shared counters: the changer dropped them; local ones go
            key_id = None if change is None else change.key_id
            await self.redis.apply_key_change(KeyChange(key_hash, key_id))
        elif change is not None and change.spend_reset:
            await self.usage_sink.flush()  # this worker's spend so far reaches the database
            await self.ledger.forget(change.key_id)  # then reseeds from it

    async def close(self) -> None:
        if self.background:
            _, pending = await asyncio.wait(
                set(self.background), timeout=self.settings.shutdown_grace_s
            )
            # Still running after the grace: mostly streams read on after their client left
            # (relay/drain.py). Cancelled, they stop reading and settle before the sink's
            # last flush.
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_SETTLE_AFTER_CANCEL_S)
        if self.key_watch is not None:
            await self.key_watch.close()
        await self.usage_sink.close()
        if self.redis is not None:
            await self.redis.close()
        await self.session.close()
        await self.engine.dispose()
        self.offload.close()


def _timeouts(settings: Settings) -> Timeouts:
    t = settings.timeouts
    return Timeouts(
        connect_s=t.connect_s, first_byte_s=t.first_byte_s, idle_s=t.idle_s, total_s=t.total_s
    )


def _guarded_loader(keys: KeyStore) -> Callable[[str], Awaitable[KeyRecord | None]]:
    """Key lookups during a database outage fail fast as 503, never as a 500 or a hang."""

    async def load(key_hash: str) -> KeyRecord | None:
        try:
            async with asyncio.timeout(_KEY_LOAD_TIMEOUT_S):
                return await keys.get_by_hash(key_hash)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("key lookup failed, database unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "The key database is temporarily unavailable; retry shortly.",
                code="database_unavailable",
                headers={"retry-after": "1"},
            ) from None

    return load


async def _load_spent(keys: KeyStore, key_id: str) -> int | None:
    record = await keys.get(key_id)
    return None if record is None else record.spent_micro


def _throttle(settings: Settings) -> FailureThrottle:
    auth = settings.auth
    return FailureThrottle(auth.max_failures, auth.window_s, auth.tracked_addresses)


def _key_cache(settings: Settings, keys: KeyStore) -> KeyCache:
    return KeyCache(
        _guarded_loader(keys),
        ttl_s=settings.limits.key_cache_ttl_s,
        negative_ttl_s=settings.auth.unknown_key_ttl_s,
        negative_size=settings.auth.unknown_key_cache_size,
        throttle=_throttle(settings),
    )


def build_state(
    settings: Settings,
    local_endpoints: Mapping[str, str],
    admin_key_hash: str,
    endpoints: EndpointRegistry,
) -> AppState:
    engine = create_engine(settings.database_url)
    keys = KeyStore(engine)
    redis = None
    if settings.redis_url:
        redis = RedisServices(
            settings.redis_url,
            settings.redis_failure_policy,
            lambda key_id: _load_spent(keys, key_id),
            lease_s=settings.timeouts.total_s + 60,  # outlives the longest request
            allowances=settings.redis_allowances,
        )
    session = create_session()
    usage_cfg = settings.usage
    metrics = Metrics()

    def circuit_changed(channel: str, model: str | None, circuit: CircuitState) -> None:
        metrics.circuit_changed(channel, model, STATE_CODES[circuit])
        if redis is not None:
            redis.circuit.local_change(channel, model, circuit)  # tell the other replicas

    health = MemoryChannelHealth(settings.circuit, on_change=circuit_changed)
    if redis is not None:
        redis.circuit.attach(health)
    admission = LocalAdmission() if redis is None else redis.admission
    admission.default_max_concurrent = settings.limits.default_max_concurrent
    return AppState(
        settings=settings,
        engine=engine,
        keys=keys,
        key_cache=_key_cache(settings, keys),
        usage_sink=UsageSink(
            engine,
            interval_s=usage_cfg.batch_interval_ms / 1000,
            batch_rows=usage_cfg.batch_max_rows,
            buffer_rows=usage_cfg.buffer_max_rows,
        ),
        usage=UsageQueries(engine),
        ledger=admission.ledger,
        prices=PriceBook(settings.pricing),
        router=build_router(settings, local_endpoints),
        health=health,
        session=session,
        upstream=UpstreamClient(session),
        tokens=TokenCounter(),
        admin_key_hash=admin_key_hash,
        admin_throttle=_throttle(settings),
        local_endpoints=local_endpoints,
        endpoints=endpoints,
        timeouts=_timeouts(settings),
        metrics=metrics,
        redis=redis,
        admission=admission,
    )
