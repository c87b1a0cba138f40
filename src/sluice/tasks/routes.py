"""Every route of the tasks subsystem, and its start and stop within the app's lifespan."""

from __future__ import annotations

import asyncio
import hashlib

from starlette.applications import Starlette
from starlette.routing import Route

from sluice.providers.midjourney import MidjourneyProtocol
from sluice.providers.suno import SunoProtocol
from sluice.providers.videos import VideosProtocol
from sluice.state import AppState
from sluice.tasks.common_routes import common_routes
from sluice.tasks.mj_routes import mj_routes
from sluice.tasks.poller import TaskPoller
from sluice.tasks.protocol import TaskProtocol
from sluice.tasks.service import TaskService
from sluice.tasks.suno_routes import suno_routes
from sluice.tasks.video_routes import video_routes

__all__ = ["start_tasks", "stop_tasks", "task_routes"]


def task_routes() -> list[Route]:
    return [*mj_routes(), *suno_routes(), *video_routes(), *common_routes()]


def _protocols() -> dict[str, TaskProtocol]:
    return {
        "midjourney": MidjourneyProtocol(),
        "suno": SunoProtocol(),
        "video": VideosProtocol(),
    }


def _server_secret(state: AppState) -> bytes:
    configured = state.settings.tasks.signing_secret
    if configured:
        return configured.get_secret_value().encode()
    # Every worker and replica has the admin key's hash; hashed again so it is not the hash
    # itself that signs (anyone who learns a signature learns nothing of the admin key).
    return hashlib.sha256(b"sluice-tasks:" + state.admin_key_hash.encode()).digest()


def start_tasks(app: Starlette, state: AppState) -> asyncio.Task[None] | None:
    """Make the service reachable from the routes and start this replica's poller."""
    service = TaskService(state, _protocols(), _server_secret(state))
    poller = TaskPoller(service)
    app.state.sluice_tasks = service
    app.state.sluice_task_poller = poller
    if not state.settings.tasks.poll:
        return None
    return asyncio.create_task(poller.run_forever(), name="task-poller")


async def stop_tasks(app: Starlette, task: asyncio.Task[None] | None) -> None:
    """Stop this replica's poller after its tick in flight (leases it holds are given back
    by that tick; a tick that hangs ends at its own timeouts)."""
    if task is not None:
        app.state.sluice_task_poller.stop()
        await task
