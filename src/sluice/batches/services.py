"""What the Files and Batch routes and the runner share, built once per worker with the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from sluice.batches.store import BatchStore
from sluice.errors import ServiceUnavailable
from sluice.files.storage import FileStorage
from sluice.files.store import FileStore

if TYPE_CHECKING:
    from sluice.batches.runner import BatchRunner

__all__ = ["BatchServices", "services_of", "BATCH_URLS"]

# The line urls a batch may use, in the order OpenAI documents them; a url is accepted only
# when this app serves it (``/v1/responses`` once Sluice has that route).
BATCH_URLS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/responses",
)


@dataclass
class BatchServices:
    storage: FileStorage
    files: FileStore
    batches: BatchStore
    urls: frozenset[str]  # the BATCH_URLS this app serves
    runner: BatchRunner | None = None  # None when batches.enabled is false


def services_of(request: Request) -> BatchServices:
    services = getattr(request.app.state, "batches", None)
    if not isinstance(services, BatchServices):  # pragma: no cover - only before start-up ends
        raise ServiceUnavailable("The Files and Batch APIs are starting; retry shortly.")
    return services
