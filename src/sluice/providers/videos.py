"""OpenAI's Videos API, both sides (``/v1/videos``): pure translation, no I/O.

Clients and upstreams (OpenAI, Azure OpenAI's v1 API) speak the same API, so translating is
replacing ids and the model name: clients see Sluice's ``video_…`` ids, upstreams their own.
Requests go upstream as they arrived (JSON, or multipart with an ``input_reference`` upload)
unless the channel maps the model to another name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from sluice.core import UpstreamRequest
from sluice.providers.configs import AzureConfig, ChannelConfig
from sluice.providers.failures import redact_secrets
from sluice.tasks.model import Accepted, Snapshot, SubmitRefused, TaskRow, TaskState
from sluice.tasks.protocol import Links

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SECONDS",
    "DEFAULT_SIZE",
    "VideosProtocol",
    "content_request",
    "create_request",
    "delete_request",
    "parse_create",
    "upstream_headers",
]

DEFAULT_MODEL, DEFAULT_SIZE, DEFAULT_SECONDS = "sora-2", "720x1280", "4"
_STATUS: dict[str, TaskState] = {
    "queued": "submitted",
    "in_progress": "in_progress",
    "completed": "success",
    "failed": "failure",
}
_CLIENT_STATUS = {
    "submitted": "queued",
    "in_progress": "in_progress",
    "success": "completed",
    "failure": "failed",
    "cancelled": "failed",
}


def _videos_url(config: ChannelConfig) -> str:
    if isinstance(config, AzureConfig):  # Azure OpenAI's v1 API (no api-version)
        return f"{config.base_url.removesuffix('/openai')}/openai/v1/videos"
    return f"{config.base_url}/videos"


def upstream_headers(config: ChannelConfig) -> dict[str, str]:
    secret = config.api_key.get_secret_value()
    auth = {"api-key": secret} if isinstance(config, AzureConfig) else {}
    if not auth:
        auth = {"Authorization": f"Bearer {secret}"}
    return {**config.headers, **auth}


def create_request(config: ChannelConfig, body: bytes, content_type: str) -> UpstreamRequest:
    return UpstreamRequest(
        url=_videos_url(config),
        headers={**upstream_headers(config), "Content-Type": content_type},
        body=body,
    )


def _video_url(config: ChannelConfig, upstream_id: str) -> str:
    return f"{_videos_url(config)}/{quote(upstream_id, safe='')}"


def content_request(config: ChannelConfig, upstream_id: str, variant: str) -> UpstreamRequest:
    url = f"{_video_url(config, upstream_id)}/content?variant={quote(variant, safe='')}"
    return UpstreamRequest(url=url, headers=upstream_headers(config), body=b"", method="GET")


def delete_request(config: ChannelConfig, upstream_id: str) -> UpstreamRequest:
    return UpstreamRequest(
        url=_video_url(config, upstream_id),
        headers=upstream_headers(config),
        body=b"",
        method="DELETE",
    )


def _error_message(body: bytes, secret: str) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return redact_secrets(str(message), secret)[:500] if message else ""


def parse_create(status: int, body: bytes, secret: str = "") -> Accepted | SubmitRefused:
    """The upstream's new video, or a refusal: its 4xx (the client's mistake, e.g. a prompt
    its policy refuses) passed on; anything else tried on the next channel."""
    if status in (401, 402, 403) or status == 429 or status >= 500:
        return SubmitRefused(503, "The upstream could not take the video now.", retry=True)
    if status >= 400:
        message = _error_message(body, secret) or f"The upstream refused the video (HTTP {status})."
        return SubmitRefused(400, message, retry=False)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    snapshot = parse_video(data)
    if snapshot is None or not isinstance(data, dict) or not data.get("id"):
        return SubmitRefused(502, "The upstream answered unreadably.", retry=True)
    return Accepted(str(data["id"]), snapshot)


def parse_video(data: Any) -> Snapshot | None:
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    state = _STATUS.get(data["status"])
    if state is None:
        return None
    progress = data.get("progress")
    percent = 100 if state == "success" else progress if isinstance(progress, int) else 0
    fail = None
    if state == "failure":
        error = data.get("error")
        fail = str(error.get("message")) if isinstance(error, dict) else "The video failed."
    return Snapshot(state, max(0, min(100, percent)), data, fail)


class VideosProtocol:
    kind = "video"

    def poll_request(self, config: ChannelConfig, row: TaskRow) -> UpstreamRequest:
        return UpstreamRequest(
            url=_video_url(config, row.upstream_id),
            headers=upstream_headers(config),
            body=b"",
            method="GET",
        )

    def parse_poll(self, row: TaskRow, status: int, body: bytes) -> Snapshot | None:
        if status != 200:
            return None
        try:
            return parse_video(orjson.loads(body))
        except orjson.JSONDecodeError:
            return None

    def parse_callback(self, row: TaskRow, body: bytes) -> Snapshot | None:
        return None  # OpenAI reports videos by webhooks of the account, not per video

    def result_urls(self, row: TaskRow) -> list[str]:
        return []  # content is fetched by id: GET /v1/videos/{id}/content

    def upstream_headers(self, config: ChannelConfig) -> Mapping[str, str]:
        return upstream_headers(config)

    def render(self, row: TaskRow, links: Links) -> dict[str, Any]:
        request, result = row.request, row.result
        error = None
        if row.state in ("failure", "cancelled"):
            code = "cancelled" if row.state == "cancelled" else "video_generation_failed"
            error = {"code": code, "message": row.fail_reason or "The video failed."}
        expires = result.get("expires_at")
        return {
            "id": row.id,
            "object": "video",
            "model": request.get("model") or DEFAULT_MODEL,
            "status": _CLIENT_STATUS.get(row.state, "queued"),
            "progress": row.progress,
            "created_at": int(row.created_at),
            "completed_at": None if row.finished_at is None else int(row.finished_at),
            "expires_at": expires if isinstance(expires, int) else None,
            "prompt": request.get("prompt"),
            "size": request.get("size") or DEFAULT_SIZE,
            "seconds": str(request.get("seconds") or DEFAULT_SECONDS),
            "remixed_from_video_id": None,
            "error": error,
        }
