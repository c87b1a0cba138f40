"""The ASGI application: routes, lifespan building AppState, and OpenAI-shaped errors for all.

``create_app`` is what tests and embedders call; ``app_from_env`` is the factory uvicorn workers
import (the ``sluice serve`` process passes the config path and shared facts through the
environment, since each worker is a fresh interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import orjson
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.admin.api import admin_routes
from sluice.admin.async_work_api import async_work_api_routes
from sluice.admin.channels_api import channels_api_routes
from sluice.admin.usage_api import usage_api_routes
from sluice.batches.lifecycle import close_batches, start_batches
from sluice.batches.routes import batch_routes
from sluice.console.routes import console_routes
from sluice.console.web import Console
from sluice.data_dir import state_dir
from sluice.endpoints import EndpointRegistry, EndpointSpec, default_specs
from sluice.errors import (
    InternalError,
    MethodNotAllowed,
    NotFound,
    SluiceError,
    error_body,
)
from sluice.files.routes import file_routes
from sluice.forwarded import ForwardedForMiddleware, TrustedProxies
from sluice.health_probe import run_probe_loop
from sluice.inbound import anthropic_routes, responses_routes
from sluice.observability.access_log import (
    AccessLogMiddleware,
    configure_access_log,
    flush_access_log,
)
from sluice.observability.guard import authorize_observer, may_observe
from sluice.relay.fast_path import RelayFastPath, fast_post_routes
from sluice.relay.http import JSON_TYPE, json_response, request_id_of
from sluice.relay.routes import relay_routes
from sluice.runtime import flush_logs_forever, tune_gc
from sluice.runtime_channels import RuntimeChannels
from sluice.secret_box import load_box
from sluice.settings import ConfigError, Settings, load_settings, resolve_config_path
from sluice.state import AppState, build_state
from sluice.storage.channel_store import ChannelStore
from sluice.tasks.routes import start_tasks, stop_tasks, task_routes

__all__ = ["create_app", "app_from_env", "ENV_LOCAL_ENDPOINTS", "ENV_ADMIN_KEY_HASH"]

log = logging.getLogger("sluice")

ENV_LOCAL_ENDPOINTS = "SLUICE_LOCAL_ENDPOINTS"
ENV_ADMIN_KEY_HASH = "SLUICE_ADMIN_KEY_HASH"


async def _sluice_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluiceError)
    headers = {"x-request-id": request_id_of(request), **exc.headers}
    return Response(exc.to_json(), exc.http_status, headers=headers, media_type=JSON_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: SluiceError = NotFound(
            f"Unknown route: {request.method} {request.url.path}", code="unknown_route"
        )
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    else:
        error = SluiceError(
            str(exc.detail), status=exc.status_code, error_type="invalid_request_error"
        )
    return await _sluice_error(request, error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = InternalError("The gateway hit an internal error; it has been logged.")
    # Sent from outside the access-log middleware, so the request id is added here.
    headers = {"x-request-id": request_id_of(request)}
    return Response(error.to_json(), 500, headers=headers, media_type=JSON_TYPE)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.app.state.sluice
    try:
        async with asyncio.timeout(2.0):
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        body = error_body("database unreachable", "service_unavailable", "database_unavailable")
        return Response(body, 503, media_type=JSON_TYPE)
    if not may_observe(request, state):  # load balancers need the status, not the details
        return json_response({"status": "ready"})
    return json_response(
        {"status": "ready", "channels": len(state.router.channels), "in_flight": state.in_flight}
    )


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition (all workers' values in multiprocess mode)."""
    state: AppState = request.app.state.sluice
    authorize_observer(request, state)
    state.metrics.usage_queue.set(state.usage_sink.depth)
    body, content_type = state.metrics.render()
    return Response(body, headers={"content-type": content_type})


async def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose supervisor died (SIGKILL) stops itself instead of serving on, orphaned."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            log.error("worker %d: supervisor %d is gone; shutting down", os.getpid(), parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _install_reload_signal(state: AppState) -> None:
    def reload() -> None:
        path = state.settings.source_path
        if path is None:
            return
        try:
            state.apply_settings(load_settings(Path(path)))
            log.info("configuration reloaded from %s", path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _runtime_channels(state: AppState) -> RuntimeChannels:
    settings = state.settings
    configured = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    return RuntimeChannels(
        ChannelStore(state.engine),
        lambda: load_box(configured, state_dir(settings)),
        state.set_runtime_channels,
        lambda: {c.name for c in state.settings.channels},
        settings.console.channel_poll_s,
    )


def create_app(
    settings: Settings,
    *,
    local_endpoints: Mapping[str, str] | None = None,
    endpoint_specs: Iterable[EndpointSpec] | None = None,
    admin_key_hash: str | None = None,
    migrate: bool = True,
    server_process: bool = False,
) -> Starlette:
    """``server_process``: this interpreter is a ``sluice serve`` worker (GC tuning, buffered
    access log flushing); embedders and tests leave their own process alone."""
    if admin_key_hash is None:
        if settings.admin_key is None:
            raise ConfigError("an admin key is required (admin_key in the config)")
        admin_key_hash = hashlib.sha256(settings.admin_key.get_secret_value().encode()).hexdigest()
    endpoints = dict(local_endpoints or {})
    # Every endpoint family Sluice ships, unless the embedder names its own set.
    registry = EndpointRegistry.of(default_specs() if endpoint_specs is None else endpoint_specs)
    key_hash = admin_key_hash

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = build_state(settings, endpoints, key_hash, registry)
        if migrate:
            from sluice.storage.migrate import upgrade_database

            await upgrade_database(state.engine)
        await asyncio.to_thread(state.tokens.warm_up)
        await state.start()  # usage sink; Redis connection and invalidation listener if set
        channels = state.channel_service = _runtime_channels(state)
        await channels.start()  # stored channels routed before the first request
        app.state.sluice = state
        batches = app.state.batches = start_batches(app, state)  # Files and Batch APIs
        _install_reload_signal(state)
        tasks = [asyncio.create_task(run_probe_loop(state), name="health-probes")]
        poller = start_tasks(app, state)  # Midjourney, Suno, video tasks (sluice.tasks)
        if multiprocessing.parent_process() is not None:  # a uvicorn worker process
            tasks.append(asyncio.create_task(_exit_with_parent(os.getppid()), name="watchdog"))
        if server_process:
            tasks.append(asyncio.create_task(flush_logs_forever(), name="log-flush"))
            tune_gc()  # last: everything built so far is long-lived
        try:
            yield
        finally:
            await close_batches(batches)  # lines in flight finish before the state closes
            await stop_tasks(app, poller)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await channels.close()
            await state.close()
            state.metrics.close()
            flush_access_log()

    hot_routes = [
        *relay_routes(registry),
        *anthropic_routes(),  # Anthropic Messages API in front (sluice.inbound)
        *responses_routes(),  # OpenAI Responses API over chat (sluice.inbound)
    ]
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *hot_routes,
        *file_routes(),
        *batch_routes(),
        *task_routes(),
        *async_work_api_routes(),
        *usage_api_routes(),  # before admin_routes: /admin/usage/{...} paths
        *channels_api_routes(),
        *admin_routes(),
    ]
    console = Console(
        key_hash,
        settings.console.session_ttl_s,
        secure_always=settings.console.secure_cookies == "always",
    )
    if settings.console.enabled:
        routes += console_routes(console)
    middleware = [
        # Outermost: every response, CORS preflights and errors included, gets a request id.
        Middleware(AccessLogMiddleware, log_bodies=settings.log_bodies),
        # The relay's POST routes skip the layers below (relay/fast_path.py says when not).
        Middleware(RelayFastPath, routes=fast_post_routes(hot_routes), render_error=_sluice_error),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "x-request-id",
                "retry-after",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],  # fmt: skip
            max_age=settings.cors.max_age_s,
        ),
    ]
    if settings.trusted_proxies:
        # First of all: the access log, allow-lists and throttles see the client behind them.
        trusted = TrustedProxies(settings.trusted_proxies)
        middleware.insert(0, Middleware(ForwardedForMiddleware, trusted=trusted))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            SluiceError: _sluice_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.console = console  # sessions, templates and static files of sluice.console
    return app


def app_from_env() -> Starlette:
    """uvicorn factory for ``sluice serve`` workers."""
    configure_access_log()
    settings = load_settings(resolve_config_path(None))
    endpoints = orjson.loads(os.environ.get(ENV_LOCAL_ENDPOINTS, "{}"))
    return create_app(
        settings,
        local_endpoints=endpoints,
        admin_key_hash=os.environ.get(ENV_ADMIN_KEY_HASH),
        migrate=False,
        server_process=True,
    )
