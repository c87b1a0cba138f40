"""Suno routes (the Suno-API protocol): submit music or lyrics, fetch one task or several.

Protocol answers use the protocol's envelope ``{code, message, data}``; Sluice's own refusals
(key, budget, rate limits, no channel) are the usual OpenAI-shaped errors.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.providers import suno
from sluice.relay.http import json_response
from sluice.routing import Channel
from sluice.tasks.callbacks import check_callback_url
from sluice.tasks.http import authenticate, base_url_of, read_object, service_of
from sluice.tasks.model import SubmitRefused
from sluice.tasks.service import Submission

__all__ = ["suno_routes"]


def _error(message: str, status: int = 400, code: str = "error") -> Response:
    return json_response(suno.envelope(None, code, message), status)


def _missing(route: str, body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    described = body.get("gpt_description_prompt")
    if route == "lyrics" and not (isinstance(prompt, str) and prompt.strip()):
        return "prompt is required"
    if route == "music" and not any(isinstance(v, str) and v.strip() for v in (prompt, described)):
        return "prompt or gpt_description_prompt is required"
    return None


async def submit(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    service.state.admission.refuse_early(key)
    route = request.path_params["route"]
    if route not in suno.ACTIONS:
        return _error(f"unknown submit route: {route}", 404)
    body = await read_object(service, request)
    problem = _missing(route, body)
    if problem is not None:
        return _error(problem)
    hook = body.get("notify_hook") or body.get("callback_url") or None
    if hook is not None:
        refused = check_callback_url(str(hook), service.config)
        if refused is not None:
            return _error(refused)

    def build(channel: Channel, upstream_hook: str | None) -> Any:
        return suno.submit_request(channel.config, route, body, upstream_hook)

    outcome = await service.submit(
        Submission(
            key=key,
            kind="suno",
            action=suno.ACTIONS[route],
            mode=None,
            model=f"suno-{route}",
            request=body,
            build=build,
            parse=suno.parse_submit,
            callback_url=None if hook is None else str(hook),
        )
    )
    if isinstance(outcome, SubmitRefused):
        return _error(outcome.description, 400 if outcome.code < 500 else outcome.code)
    return json_response(suno.envelope(outcome.id))


async def fetch_one(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    row = await service.store.get_for_key(request.path_params["task_id"], key.id, "suno")
    if row is None:
        return _error("task_not_exist", 404, "task_not_exist")
    return json_response(suno.envelope(service.render(row, base_url_of(service, request))))


async def fetch_many(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    body = await read_object(service, request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return _error("ids must be a list of task ids")
    rows = await service.store.list_for_key(key.id, "suno", ids=ids[:100])
    base = base_url_of(service, request)
    return json_response(suno.envelope([service.render(row, base) for row in rows]))


def suno_routes() -> list[Route]:
    return [
        Route("/suno/submit/{route}", submit, methods=["POST"]),
        Route("/suno/fetch/{task_id}", fetch_one, methods=["GET"]),
        Route("/suno/fetch", fetch_many, methods=["POST"]),
    ]
