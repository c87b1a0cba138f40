"""Midjourney routes (the midjourney-proxy protocol), with the ``/mj-fast|relax|turbo`` prefixes.

Protocol answers (submitted, refused, not found) use the protocol's envelope
``{code, description, result, properties}``; Sluice's own refusals (key, budget, rate limits,
no channel) are the usual OpenAI-shaped errors with their HTTP status.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.providers import midjourney as mj
from sluice.relay.http import json_response
from sluice.routing import Channel
from sluice.tasks.callbacks import check_callback_url
from sluice.tasks.http import authenticate, base_url_of, read_object, service_of
from sluice.tasks.model import SubmitRefused
from sluice.tasks.service import Submission, TaskService
from sluice.upstream import read_body

__all__ = ["mj_routes"]

_NOT_FOUND = "task_no_found"


def _invalid(description: str) -> Response:
    return json_response(mj.answer(mj.CODE_INVALID, description), 400)


def _not_found() -> Response:
    return json_response(mj.answer(mj.CODE_INVALID, _NOT_FOUND), 404)


def _missing(route: str, body: dict[str, Any]) -> str | None:
    """What a submission lacks, by route; None when it is complete."""

    def text(name: str) -> bool:
        return isinstance(body.get(name), str) and bool(body[name].strip())

    if route in ("imagine", "shorten") and not text("prompt"):
        return "prompt is required"
    if route == "action" and not (text("taskId") and text("customId")):
        return "taskId and customId are required"
    if route == "modal" and not text("taskId"):
        return "taskId is required"
    if route == "describe" and not (text("base64") or text("link")):
        return "base64 is required"
    if route == "blend":
        images = body.get("base64Array")
        if not isinstance(images, list) or not 2 <= len(images) <= 5:
            return "base64Array must hold 2 to 5 images"
    hook = body.get("notifyHook")
    if hook is not None and not isinstance(hook, str):
        return "notifyHook must be a URL"
    return None


async def submit(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    service.state.admission.refuse_early(key)
    route = request.path_params["route"]
    mode = request.path_params.get("mode")
    if route not in mj.SUBMIT_ACTIONS or (mode is not None and mode not in mj.MODES):
        return _invalid(f"unknown submit route: {route}")
    body = await read_object(service, request)
    problem = _missing(route, body)
    if problem is not None:
        return _invalid(problem)
    hook = body.get("notifyHook") or None
    if hook is not None:
        refused_hook = check_callback_url(hook, service.config)
        if refused_hook is not None:
            return _invalid(refused_hook)
    upstream_body = dict(body)
    action = mj.SUBMIT_ACTIONS[route]
    pinned = None
    if route in ("action", "modal"):
        parent = await service.store.get_for_key(body["taskId"], key.id, "midjourney")
        if parent is None:
            return _invalid(_NOT_FOUND)
        upstream_body["taskId"] = parent.upstream_id
        pinned = parent.channel  # the upstream that knows the parent task
        if route == "action":
            action = mj.action_of_custom_id(body["customId"])

    def build(channel: Channel, upstream_hook: str | None) -> Any:
        return mj.submit_request(channel.config, route, upstream_body, mode, upstream_hook)

    outcome = await service.submit(
        Submission(
            key=key,
            kind="midjourney",
            action=action,
            mode=mode or "fast",
            model=f"mj-{mode or 'fast'}-{action.lower()}",
            request=body,
            build=build,
            parse=mj.parse_submit,
            callback_url=hook,
            pinned=pinned,
        )
    )
    if isinstance(outcome, SubmitRefused):
        return json_response(mj.answer(outcome.code, outcome.description))
    return json_response(mj.answer(mj.CODE_SUBMITTED, "Submit success", outcome.id))


async def fetch(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    row = await service.store.get_for_key(request.path_params["task_id"], key.id, "midjourney")
    if row is None:
        return _not_found()
    return json_response(service.render(row, base_url_of(service, request)))


async def list_by_condition(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    body = await read_object(service, request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return _invalid("ids must be a list of task ids")
    rows = await service.store.list_for_key(key.id, "midjourney", ids=ids[:100])
    base = base_url_of(service, request)
    return json_response([service.render(row, base) for row in rows])


async def image_seed(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    row = await service.store.get_for_key(request.path_params["task_id"], key.id, "midjourney")
    channel = None if row is None else service.channel(row.channel)
    if row is None or channel is None:
        return _not_found()
    return await _seed_from_upstream(service, channel, row.upstream_id)


async def _seed_from_upstream(service: TaskService, channel: Channel, upstream_id: str) -> Response:
    request = mj.seed_request(channel.config, upstream_id)
    response = await service.state.upstream.open(
        request, service.state.timeouts_for(channel.config)
    )
    try:
        body = await read_body(response, 64 * 1024)
    finally:
        response.close()
    return json_response(mj.parse_seed(response.status, body))


def mj_routes() -> list[Route]:
    routes: list[Route] = []
    for prefix in ("", "/mj-{mode}"):
        routes += [
            Route(prefix + "/mj/submit/{route}", submit, methods=["POST"]),
            Route(prefix + "/mj/task/{task_id}/fetch", fetch, methods=["GET"]),
            Route(prefix + "/mj/task/list-by-condition", list_by_condition, methods=["POST"]),
            Route(prefix + "/mj/task/{task_id}/image-seed", image_seed, methods=["GET"]),
        ]
    return routes
