"""A fake midjourney-proxy: the real protocol over a real socket, tasks moving on a clock.

A task is NOT_START, then SUBMITTED after one ``step_s``, IN_PROGRESS (50%) after two and
SUCCESS (or FAILURE) after three; the fake calls the task's ``notifyHook`` on every change.
Behaviour is steered by the prompt: ``fail`` ends in FAILURE, ``hang`` never leaves
IN_PROGRESS, ``banned`` is refused (code 24). ``busy`` makes every submission answer 23.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["FakeMidjourney", "MjTask"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET = "mj-upstream-SECRET-123456"
IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2048  # ~512 KiB


def message_hash(task_id: str) -> str:
    """Stands for the Discord message hash in buttons and image URLs (not the task id)."""
    return hashlib.sha1(task_id.encode()).hexdigest()[:10]


def _button(custom_id: str, label: str) -> dict[str, Any]:
    return {"customId": custom_id, "emoji": "", "label": label, "type": 2, "style": 2}


@dataclass
class MjTask:
    id: str
    action: str
    prompt: str
    created: float
    hook: str | None
    parent: str | None = None
    fetches: int = 0
    notified: list[str] = field(default_factory=list)

    def status(self, step_s: float) -> tuple[str, int]:
        age = time.monotonic() - self.created
        if age < step_s:
            return "NOT_START", 0
        if age < 2 * step_s:
            return "SUBMITTED", 0
        if age < 3 * step_s or "hang" in self.prompt:
            return "IN_PROGRESS", 50
        return ("FAILURE", 50) if "fail" in self.prompt else ("SUCCESS", 100)


class FakeMidjourney:
    def __init__(self, *, step_s: float = 0.2, secret: str = SECRET) -> None:
        self.step_s = step_s
        self.secret = secret
        self.busy = False
        self.tasks: dict[str, MjTask] = {}
        self.submits: list[tuple[str, dict[str, Any]]] = []  # (path, body)
        self.fetches = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._notifier: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeMidjourney:
        app = web.Application(middlewares=[self._auth])
        for prefix in ("", "/mj-fast", "/mj-relax", "/mj-turbo"):
            app.router.add_post(prefix + "/mj/submit/{route}", self._submit)
        app.router.add_get("/mj/task/{id}/fetch", self._fetch)
        app.router.add_get("/mj/task/{id}/image-seed", self._seed)
        app.router.add_get("/images/{id}.png", self._image)
        self._runner, self.port = await serve_on_loopback(app)
        self._notifier = asyncio.ensure_future(self._notify_forever())
        return self

    async def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/images/"):
            return await handler(request)
        if request.headers.get("mj-api-secret") != self.secret:
            return web.json_response({"code": 401, "description": "bad secret"}, status=401)
        return await handler(request)

    def task_object(self, task: MjTask) -> dict[str, Any]:
        status, progress = task.status(self.step_s)
        done = status == "SUCCESS"
        buttons = []
        if done and task.action in ("IMAGINE", "VARIATION", "REROLL"):
            mark = message_hash(task.id)
            buttons = [
                _button(f"MJ::JOB::{kind}::{i}::{mark}", f"{kind[0].upper()}{i}")
                for kind in ("upsample", "variation")
                for i in (1, 2, 3, 4)
            ]
        return {
            "id": task.id,
            "action": task.action,
            "prompt": task.prompt,
            "promptEn": task.prompt,
            "description": "/imagine " + task.prompt if task.action == "IMAGINE" else "",
            "state": "",
            "status": status,
            "progress": f"{progress}%",
            "imageUrl": f"{self.base_url}/images/{message_hash(task.id)}.png" if done else "",
            "buttons": buttons,
            "failReason": "the upstream job failed" if status == "FAILURE" else "",
            "submitTime": int(task.created * 1000),
            "startTime": None,
            "finishTime": None,
            "properties": {
                "finalPrompt": "a, b, c" if task.action == "DESCRIBE" else task.prompt,
                "messageId": "upstream-message-" + task.id,
                "notifyHook": task.hook,
            },
        }

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        route = request.match_info["route"]
        self.submits.append((request.path, body))
        if self.busy:
            return web.json_response({"code": 23, "description": "queue full", "result": None})
        prompt = str(body.get("prompt") or "")
        if "banned" in prompt:
            return web.json_response(
                {"code": 24, "description": "banned prompt", "result": None, "properties": {}}
            )
        action = route.upper()
        parent = None
        if route == "action":
            parent_task = self.tasks.get(str(body.get("taskId")))
            custom_id = str(body.get("customId"))
            if parent_task is None or message_hash(parent_task.id) not in custom_id:
                return web.json_response({"code": 4, "description": "no such task or button"})
            action = "UPSCALE" if "upsample" in custom_id else "VARIATION"
            parent, prompt = parent_task.id, parent_task.prompt
        task_id = f"up-{next(self._ids)}"
        self.tasks[task_id] = MjTask(
            task_id, action, prompt, time.monotonic(), body.get("notifyHook"), parent
        )
        return web.json_response(
            {"code": 1, "description": "Submit success", "result": task_id, "properties": {}}
        )

    async def _fetch(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        self.fetches += 1
        if task is None:
            return web.json_response(None, status=404)
        task.fetches += 1
        return web.json_response(self.task_object(task))

    async def _seed(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.tasks:
            return web.json_response({"code": 4, "description": "not found"})
        return web.json_response({"code": 1, "description": "success", "result": "4242"})

    async def _image(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for start in range(0, len(IMAGE_BYTES), 65536):
            await response.write(IMAGE_BYTES[start : start + 65536])
        await response.write_eof()
        return response

    async def _notify_forever(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(self.step_s / 4)
                for task in list(self.tasks.values()):
                    if not task.hook:
                        continue
                    status, _ = task.status(self.step_s)
                    if task.notified and task.notified[-1] == status:
                        continue
                    task.notified.append(status)
                    body = orjson.dumps(self.task_object(task))
                    headers = {"Content-Type": "application/json"}
                    try:
                        async with session.post(task.hook, data=body, headers=headers):
                            pass
                    except aiohttp.ClientError:
                        pass
