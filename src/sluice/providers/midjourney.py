"""The midjourney-proxy protocol, both sides: pure translation, no I/O.

Clients and upstreams speak the same protocol (``/mj/submit/<action>``, ``/mj/task/{id}/fetch``),
so translating is mostly replacing ids: clients see Sluice's task ids, upstreams their own, and
the client's ``notifyHook`` is Sluice's business (the upstream gets Sluice's own callback URL,
or none). Submit answers carry a code: 1 submitted, 21 already exists, 22 queued, 23 queue
full, 24 prompt refused, 4 invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.core import UpstreamRequest
from sluice.providers.configs import ChannelConfig
from sluice.tasks.model import Accepted, Snapshot, SubmitRefused, TaskRow, TaskState
from sluice.tasks.protocol import Links

__all__ = [
    "CODE_EXISTS",
    "CODE_INVALID",
    "CODE_QUEUE_FULL",
    "CODE_QUEUED",
    "CODE_REFUSED",
    "CODE_SUBMITTED",
    "MODES",
    "SUBMIT_ACTIONS",
    "MidjourneyProtocol",
    "action_of_custom_id",
    "answer",
    "parse_seed",
    "parse_submit",
    "seed_request",
    "submit_request",
]

CODE_SUBMITTED, CODE_EXISTS, CODE_QUEUED, CODE_QUEUE_FULL, CODE_REFUSED = 1, 21, 22, 23, 24
CODE_INVALID = 4
MODES = ("fast", "relax", "turbo")
# Submit route -> the task's action (for ``action``, the button's customId decides).
SUBMIT_ACTIONS = {
    "imagine": "IMAGINE",
    "blend": "BLEND",
    "describe": "DESCRIBE",
    "shorten": "SHORTEN",
    "modal": "MODAL",
    "action": "ACTION",
}
_STATUS: dict[str, TaskState] = {
    "NOT_START": "submitted",
    "SUBMITTED": "submitted",
    "MODAL": "in_progress",
    "IN_PROGRESS": "in_progress",
    "SUCCESS": "success",
    "FAILURE": "failure",
    "CANCEL": "cancelled",
}
_CLIENT_STATUS = {
    "submitted": "SUBMITTED",
    "in_progress": "IN_PROGRESS",
    "success": "SUCCESS",
    "failure": "FAILURE",
    "cancelled": "CANCEL",
}
# Fields of an upstream task shown to clients; anything else (its ids, account and message
# ids, nonce) stays inside Sluice.
_SHOWN = ("action", "prompt", "promptEn", "description", "buttons", "failReason", "maskBase64")
_SHOWN_PROPERTIES = ("finalPrompt", "finalZhPrompt", "notifyHook")
_CUSTOM_ID_ACTIONS = (
    ("upsample", "UPSCALE"),
    ("variation", "VARIATION"),
    ("reroll", "REROLL"),
    ("Outpaint", "ZOOM"),
    ("CustomZoom", "ZOOM"),
    ("pan_", "PAN"),
    ("Inpaint", "INPAINT"),
)


def answer(code: int, description: str, result: Any = None) -> dict[str, Any]:
    return {"code": code, "description": description, "result": result, "properties": {}}


def action_of_custom_id(custom_id: str) -> str:
    """A button's action, named as midjourney-proxy names it (``MJ::JOB::upsample::1::…`` is
    UPSCALE), for pricing and the task's ``action``."""
    for marker, action in _CUSTOM_ID_ACTIONS:
        if marker in custom_id:
            return action
    return "ACTION"


def submit_request(
    config: ChannelConfig,
    route: str,
    body: Mapping[str, Any],
    mode: str | None,
    hook: str | None,
) -> UpstreamRequest:
    """``body`` already carries upstream ids (``taskId``); the client's notifyHook is replaced
    by Sluice's own callback URL, or removed."""
    upstream = {k: v for k, v in body.items() if k != "notifyHook"}
    if hook is not None:
        upstream["notifyHook"] = hook
    prefix = f"/mj-{mode}" if mode else ""
    return UpstreamRequest(
        url=f"{config.base_url}{prefix}/mj/submit/{route}",
        headers=_headers(config),
        body=orjson.dumps(upstream),
    )


def _headers(config: ChannelConfig) -> dict[str, str]:
    return {
        **config.headers,
        "mj-api-secret": config.api_key.get_secret_value(),
        "Content-Type": "application/json",
    }


def parse_submit(status: int, body: bytes) -> Accepted | SubmitRefused:
    """The upstream's submit answer: its task id and first state, or a refusal (``retry`` on
    another channel when this one is full or failing)."""
    if status >= 500 or status == 429:
        return SubmitRefused(CODE_QUEUE_FULL, "The upstream is busy; try again later.", retry=True)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return SubmitRefused(CODE_QUEUE_FULL, "The upstream answered unreadably.", retry=True)
    if not isinstance(data, dict):
        return SubmitRefused(CODE_QUEUE_FULL, "The upstream answered unreadably.", retry=True)
    code = data.get("code")
    description = str(data.get("description") or "")
    result = data.get("result")
    if code in (CODE_SUBMITTED, CODE_QUEUED, CODE_EXISTS) and result not in (None, ""):
        return Accepted(str(result), Snapshot("submitted"))
    if code == CODE_QUEUE_FULL:
        return SubmitRefused(CODE_QUEUE_FULL, description or "queue full", retry=True)
    if status >= 400 and code is None:  # an HTTP error without the protocol's envelope
        return SubmitRefused(CODE_INVALID, f"The upstream refused the task (HTTP {status}).", False)
    if not isinstance(code, int) or code == CODE_SUBMITTED:
        code = CODE_INVALID
    return SubmitRefused(code, description or "The upstream refused the task.", retry=False)


def _progress(value: Any) -> int:
    text = str(value or "0").strip().rstrip("%")
    try:
        return max(0, min(100, int(float(text))))
    except ValueError:
        return 0


def parse_task(data: Any) -> Snapshot | None:
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    state = _STATUS.get(data["status"])
    if state is None:
        return None
    progress = 100 if state == "success" else _progress(data.get("progress"))
    fail = data.get("failReason") if state == "failure" else None
    return Snapshot(state, progress, data, str(fail) if fail else None)


class MidjourneyProtocol:
    kind = "midjourney"

    def poll_request(self, config: ChannelConfig, row: TaskRow) -> UpstreamRequest:
        return UpstreamRequest(
            url=f"{config.base_url}/mj/task/{row.upstream_id}/fetch",
            headers=_headers(config),
            body=b"",
            method="GET",
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
        urls = [str(row.result.get("imageUrl") or "")]
        extra = row.result.get("imageUrls")
        if isinstance(extra, list):
            urls += [str(u.get("url") if isinstance(u, dict) else u) for u in extra]
        return urls

    def upstream_headers(self, config: ChannelConfig) -> Mapping[str, str]:
        return {}  # image URLs of midjourney-proxy are public (Discord's CDN or its own)

    def render(self, row: TaskRow, links: Links) -> dict[str, Any]:
        result = row.result
        task: dict[str, Any] = {k: result[k] for k in _SHOWN if k in result}
        task.setdefault("action", row.action)
        task.setdefault("prompt", row.request.get("prompt", ""))
        task.setdefault("promptEn", task.get("prompt", ""))
        task.setdefault("description", "")
        task.setdefault("buttons", [])
        urls = self.result_urls(row)
        task.update(
            id=row.id,
            mode=(row.mode or "fast").upper(),
            state=row.request.get("state") or "",
            status=_CLIENT_STATUS.get(row.state, "SUBMITTED"),
            progress=f"{row.progress}%",
            imageUrl=links.url(row.id, 0, urls[0]),
            failReason=row.fail_reason or result.get("failReason") or "",
            submitTime=int(row.created_at * 1000),
            startTime=None if row.started_at is None else int(row.started_at * 1000),
            finishTime=None if row.finished_at is None else int(row.finished_at * 1000),
        )
        if len(urls) > 1:
            task["imageUrls"] = [{"url": links.url(row.id, i, u)} for i, u in enumerate(urls)][1:]
        properties = result.get("properties")
        if isinstance(properties, dict):
            task["properties"] = {k: properties[k] for k in _SHOWN_PROPERTIES if k in properties}
            task["properties"]["notifyHook"] = row.callback_url or ""
        return task


def seed_request(config: ChannelConfig, upstream_id: str) -> UpstreamRequest:
    return UpstreamRequest(
        url=f"{config.base_url}/mj/task/{upstream_id}/image-seed",
        headers=_headers(config),
        body=b"",
        method="GET",
    )


def parse_seed(status: int, body: bytes) -> dict[str, Any]:
    """The seed answer as the client gets it (the protocol's envelope; nothing else passed)."""
    try:
        data = orjson.loads(body) if status == 200 else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("code") != CODE_SUBMITTED:
        description = str(data.get("description") or "") if isinstance(data, dict) else ""
        return answer(CODE_INVALID, description or "the seed is not available")
    return answer(CODE_SUBMITTED, str(data.get("description") or "success"), data.get("result"))
