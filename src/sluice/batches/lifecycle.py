"""The Files and Batch APIs' per-worker services: built when the app starts, closed before the
state they run lines through."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from sluice.batches.runner import BatchRunner
from sluice.batches.services import BATCH_URLS, BatchServices
from sluice.batches.store import BatchStore
from sluice.files.storage import build_storage
from sluice.files.store import FileStore
from sluice.state import AppState

__all__ = ["start_batches", "close_batches"]


def _served_urls(app: Starlette) -> frozenset[str]:
    posted = {
        route.path
        for route in app.routes
        if isinstance(route, Route) and route.methods and "POST" in route.methods
    }
    return frozenset(url for url in BATCH_URLS if url in posted)


def start_batches(app: Starlette, state: AppState) -> BatchServices:
    settings = state.settings
    services = BatchServices(
        storage=build_storage(settings.files, settings.database_url),
        files=FileStore(state.engine),
        batches=BatchStore(state.engine),
        urls=_served_urls(app),
    )
    if settings.batches.enabled:
        services.runner = BatchRunner(app, state, services)
        services.runner.start()
    return services


async def close_batches(services: BatchServices) -> None:
    if services.runner is not None:
        await services.runner.close()
