"""OpenAI's Videos API (``/v1/videos``): create, retrieve, list, download (streamed), delete.

Answers are the API's own objects (``video``, ``list``, ``video.deleted``) and its errors are
the usual OpenAI-shaped ones. A video is priced per second by model and size
(``<model>-<size>`` in the price list, else ``<model>``), reserved at create.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.core import UpstreamRequest
from sluice.errors import InvalidRequest, NotFound, ServiceUnavailable
from sluice.providers import videos
from sluice.relay.http import json_response
from sluice.relay.model_access import check_model
from sluice.routing import Channel
from sluice.tasks.common_routes import stream_from
from sluice.tasks.http import authenticate, read_raw, service_of
from sluice.tasks.model import Snapshot, SubmitRefused, TaskRow
from sluice.tasks.multipart_fields import boundary_of, text_fields
from sluice.tasks.service import Submission, TaskService
from sluice.tasks.store import Ending

__all__ = ["video_routes"]

_MAX_SECONDS = 60
_VARIANTS = frozenset({"video", "thumbnail", "spritesheet"})


def _not_found(video_id: str) -> NotFound:
    return NotFound(f"No video found with id '{video_id[:100]}'.", param="video_id")


def _fields(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type.startswith("multipart/form-data"):
        return dict(text_fields(raw, boundary_of(content_type)))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _checked(fields: dict[str, Any]) -> tuple[str, str, str, int]:
    """model, prompt, size and seconds, with the API's defaults."""
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= 32000:
        raise InvalidRequest("prompt is required (1 to 32000 characters).", param="prompt")
    model = fields.get("model") or videos.DEFAULT_MODEL
    size = fields.get("size") or videos.DEFAULT_SIZE
    seconds = str(fields.get("seconds") or videos.DEFAULT_SECONDS)
    if not isinstance(model, str) or not isinstance(size, str):
        raise InvalidRequest("model and size must be strings.", param="model")
    if not seconds.isdigit() or not 1 <= int(seconds) <= _MAX_SECONDS:
        raise InvalidRequest(f"seconds must be 1 to {_MAX_SECONDS}.", param="seconds")
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise InvalidRequest("size must be WIDTHxHEIGHT, e.g. 720x1280.", param="size")
    return model, prompt, size, int(seconds)


def _upstream_body(
    channel: Channel, model: str, raw: bytes, fields: dict[str, Any], content_type: str
) -> bytes:
    """The client's bytes as they came, unless the channel maps the model to another name."""
    target = channel.config.upstream_model(model)
    if target == fields.get("model", videos.DEFAULT_MODEL):
        return raw
    if content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "This model is served under another name by its channel, which Sluice applies to "
            "JSON requests only; send the video request as JSON (input_reference by image_url).",
            code="unsupported_parameter",
        )
    return orjson.dumps({**fields, "model": target})


async def create(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    service.state.admission.refuse_early(key)
    content_type = request.headers.get("content-type", "application/json").lower()
    raw = await read_raw(request, service.state.settings.limits.max_body_bytes)
    fields = _fields(content_type, raw)
    model, prompt, size, seconds = _checked(fields)
    check_model(service.state.router, key, model)
    send_type = request.headers.get("content-type", "application/json")

    def build(channel: Channel, hook: str | None) -> UpstreamRequest:
        body = _upstream_body(channel, model, raw, fields, content_type)
        json_type = "application/json"
        return videos.create_request(channel.config, body, send_type if body is raw else json_type)

    kept = {"model": model, "prompt": prompt, "size": size, "seconds": str(seconds)}
    outcome = await service.submit(
        Submission(
            key=key,
            kind="video",
            action="CREATE",
            mode=None,
            model=model,
            request=kept,
            build=build,
            parse=videos.parse_create,
            units=seconds,
            priced_as=f"{model}-{size}",
        )
    )
    if isinstance(outcome, SubmitRefused):
        if outcome.code >= 500:
            raise ServiceUnavailable(outcome.description, code="no_available_channel")
        raise InvalidRequest(outcome.description, code="video_refused")
    return json_response(service.render(outcome, None))


async def _owned(service: TaskService, request: Request) -> TaskRow:
    key = await authenticate(service, request)
    video_id = request.path_params["video_id"]
    row = await service.store.get_for_key(video_id, key.id, "video")
    if row is None:
        raise _not_found(video_id)
    return row


async def retrieve(request: Request) -> Response:
    service = service_of(request)
    return json_response(service.render(await _owned(service, request), None))


async def list_videos(request: Request) -> Response:
    service = service_of(request)
    key = await authenticate(service, request)
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or int(limit_text) > 100:
        raise InvalidRequest("limit must be 0 to 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc.", param="order")
    after = None
    if query.get("after"):
        after = await service.store.get_for_key(query["after"], key.id, "video")
        if after is None:
            raise _not_found(query["after"])
    limit = int(limit_text)
    rows = await service.store.list_for_key(
        key.id, "video", limit=limit + 1, after=after, ascending=order == "asc"
    )
    data = [service.render(row, None) for row in rows[:limit]]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }
    )


async def content(request: Request) -> Response:
    """The video (or a preview) streamed from the upstream as it arrives, never held whole."""
    service = service_of(request)
    row = await _owned(service, request)
    variant = request.query_params.get("variant", "video")
    if variant not in _VARIANTS:
        raise InvalidRequest("variant must be video, thumbnail or spritesheet.", param="variant")
    if row.state != "success":
        raise InvalidRequest(
            "The video is not ready: download it once its status is completed.",
            code="video_not_ready",
        )
    channel = service.channel(row.channel)
    if channel is None:
        raise ServiceUnavailable("The channel that made this video is no longer configured.")
    upstream = videos.content_request(channel.config, row.upstream_id, variant)
    return await stream_from(service.state.session, upstream.url, upstream.headers)


async def delete(request: Request) -> Response:
    """Delete the video upstream and hide it here; one still running is cancelled and its
    reservation released in full."""
    service = service_of(request)
    row = await _owned(service, request)
    channel = service.channel(row.channel)
    if channel is not None:
        await _delete_upstream(service, channel, row)
    if not row.final:
        snapshot = Snapshot("cancelled", row.progress, row.result, "Deleted before it finished.")
        cancelled = Ending("cancelled", 0, 499, "task_cancelled", snapshot)
        await service.observe(row, snapshot, ending=cancelled)
    await service.store.mark_deleted(row.id)
    return json_response({"id": row.id, "object": "video.deleted", "deleted": True})


async def _delete_upstream(service: TaskService, channel: Channel, row: TaskRow) -> None:
    request = videos.delete_request(channel.config, row.upstream_id)
    try:
        response = await service.state.upstream.open(
            request, service.state.timeouts_for(channel.config)
        )
        response.close()
    except Exception:  # noqa: BLE001 - best effort: the video is hidden here regardless
        return


def video_routes() -> list[Route]:
    return [
        Route("/v1/videos", create, methods=["POST"]),
        Route("/v1/videos", list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", retrieve, methods=["GET"]),
        Route("/v1/videos/{video_id}", delete, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", content, methods=["GET"]),
    ]
