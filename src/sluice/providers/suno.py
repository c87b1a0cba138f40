"""The Suno-API protocol, both sides: pure translation, no I/O.

The relay protocol clients already use for Suno (``/suno/submit/music|lyrics``,
``/suno/fetch``): every answer is ``{code, message, data}`` with ``code`` "success" or an error
word; a task is ``{task_id, action, status, progress, fail_reason, submit_time, start_time,
finish_time, data}`` where ``data`` holds the clips (music) or the lyrics. Upstreams speak the
same protocol, so translating is replacing ids and result URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.core import UpstreamRequest
from sluice.providers.configs import ChannelConfig
from sluice.tasks.model import Accepted, Snapshot, SubmitRefused, TaskRow, TaskState
from sluice.tasks.protocol import Links

__all__ = ["ACTIONS", "SunoProtocol", "envelope", "parse_submit", "submit_request"]

ACTIONS = {"music": "MUSIC", "lyrics": "LYRICS"}
_URL_FIELDS = ("audio_url", "image_url", "video_url", "image_large_url")
_STATUS: dict[str, TaskState] = {
    "NOT_START": "submitted",
    "SUBMITTED": "submitted",
    "QUEUED": "submitted",
    "IN_PROGRESS": "in_progress",
    "SUCCESS": "success",
    "FAILURE": "failure",
}
_CLIENT_STATUS = {
    "submitted": "SUBMITTED",
    "in_progress": "IN_PROGRESS",
    "success": "SUCCESS",
    "failure": "FAILURE",
    "cancelled": "FAILURE",
}
# Fields of a clip that stay inside Sluice (upstream account details).
_HIDDEN_CLIP_FIELDS = frozenset({"user_id", "display_name", "handle", "avatar_image_url"})


def envelope(data: Any, code: str = "success", message: str = "") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def _headers(config: ChannelConfig) -> dict[str, str]:
    return {
        **config.headers,
        "Authorization": f"Bearer {config.api_key.get_secret_value()}",
        "Content-Type": "application/json",
    }


def submit_request(
    config: ChannelConfig, route: str, body: Mapping[str, Any], hook: str | None
) -> UpstreamRequest:
    upstream = {k: v for k, v in body.items() if k not in ("notify_hook", "callback_url")}
    if hook is not None:
        upstream["notify_hook"] = hook
    return UpstreamRequest(
        url=f"{config.base_url}/suno/submit/{route}",
        headers=_headers(config),
        body=orjson.dumps(upstream),
    )


def parse_submit(status: int, body: bytes) -> Accepted | SubmitRefused:
    if status >= 500 or status == 429:
        return SubmitRefused(503, "The upstream is busy; try again later.", retry=True)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return SubmitRefused(502, "The upstream answered unreadably.", retry=True)
    if not isinstance(data, dict):
        return SubmitRefused(502, "The upstream answered unreadably.", retry=True)
    task_id = data.get("data")
    if data.get("code") == "success" and isinstance(task_id, str) and task_id:
        return Accepted(task_id, Snapshot("submitted"))
    message = str(data.get("message") or f"The upstream refused the task (HTTP {status}).")
    return SubmitRefused(400, message, retry=False)


def parse_task(data: Any) -> Snapshot | None:
    if isinstance(data, dict) and "task_id" not in data and isinstance(data.get("data"), list):
        items = data["data"]  # a fetch answer: {code, data: [task]}
        data = items[0] if items else None
    if isinstance(data, dict) and data.get("code") and isinstance(data.get("data"), dict):
        data = data["data"]  # a callback wrapped in the envelope
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    state = _STATUS.get(data["status"])
    if state is None:
        return None
    progress = 100 if state == "success" else _progress(data.get("progress"))
    fail = data.get("fail_reason") if state == "failure" else None
    return Snapshot(state, progress, data, str(fail) if fail else None)


def _progress(value: Any) -> int:
    try:
        return max(0, min(100, int(float(str(value or "0").rstrip("%")))))
    except ValueError:
        return 0


def _clips(row: TaskRow) -> list[dict[str, Any]]:
    data = row.result.get("data")
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


class SunoProtocol:
    kind = "suno"

    def poll_request(self, config: ChannelConfig, row: TaskRow) -> UpstreamRequest:
        body = {"ids": [row.upstream_id], "action": row.action}
        return UpstreamRequest(
            url=f"{config.base_url}/suno/fetch", headers=_headers(config), body=orjson.dumps(body)
        )

    def parse_poll(self, row: TaskRow, status: int, body: bytes) -> Snapshot | None:
        if status != 200:
            return None
        try:
            return parse_task(orjson.loads(body))
        except orjson.JSONDecodeError:
            return None

    def parse_callback(self, row: TaskRow, body: bytes) -> Snapshot | None:
        return self.parse_poll(row, 200, body)

    def result_urls(self, row: TaskRow) -> list[str]:
        return [str(clip.get(f) or "") for clip in _clips(row) for f in _URL_FIELDS]

    def upstream_headers(self, config: ChannelConfig) -> Mapping[str, str]:
        return {}

    def render(self, row: TaskRow, links: Links) -> dict[str, Any]:
        result = row.result
        data: Any = result.get("data")
        if isinstance(data, list):
            clips = []
            for i, clip in enumerate(_clips(row)):
                shown = {k: v for k, v in clip.items() if k not in _HIDDEN_CLIP_FIELDS}
                for j, field in enumerate(_URL_FIELDS):
                    if clip.get(field):
                        shown[field] = links.url(row.id, i * len(_URL_FIELDS) + j, clip[field])
                clips.append(shown)
            data = clips
        return {
            "task_id": row.id,
            "action": row.action,
            "status": _CLIENT_STATUS.get(row.state, "SUBMITTED"),
            "progress": f"{row.progress}%",
            "fail_reason": row.fail_reason or "",
            "submit_time": int(row.created_at),
            "start_time": None if row.started_at is None else int(row.started_at),
            "finish_time": None if row.finished_at is None else int(row.finished_at),
            "data": data,
        }
