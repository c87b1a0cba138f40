"""A fake Suno-API server: the real protocol over a real socket, tasks moving on a clock.

A task is SUBMITTED, then IN_PROGRESS after one ``step_s`` and SUCCESS (FAILURE when the prompt
says ``fail``) after two. A music task makes two clips whose audio is served at ``/files/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["AUDIO_BYTES", "SUNO_SECRET", "FakeSuno"]

SUNO_SECRET = "suno-upstream-SECRET-654321"
AUDIO_BYTES = b"ID3" + bytes(range(256)) * 1024


@dataclass
class SunoTask:
    id: str
    action: str
    prompt: str
    created: float
    hook: str | None = None
    notified: list[str] = field(default_factory=list)


class FakeSuno:
    def __init__(self, *, step_s: float = 0.2) -> None:
        self.step_s = step_s
        self.tasks: dict[str, SunoTask] = {}
        self.submits: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._notifier: asyncio.Task[None] | None = None
        self.fetches = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeSuno:
        app = web.Application()
        app.router.add_post("/suno/submit/{route}", self._submit)
        app.router.add_post("/suno/fetch", self._fetch)
        app.router.add_get("/files/{name}", self._file)
        self._runner, self.port = await serve_on_loopback(app)
        self._notifier = asyncio.ensure_future(self._notify_forever())
        return self

    async def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SUNO_SECRET}"

    def task_object(self, task: SunoTask) -> dict[str, Any]:
        age = time.monotonic() - task.created
        status = "SUBMITTED" if age < self.step_s else "IN_PROGRESS"
        if age >= 2 * self.step_s:
            status = "FAILURE" if "fail" in task.prompt else "SUCCESS"
        data: Any = None
        if status == "SUCCESS" and task.action == "MUSIC":
            mark = hashlib.sha1(task.id.encode()).hexdigest()[:8]
            data = [
                {
                    "id": f"clip-{mark}-{n}",
                    "title": "A song",
                    "status": "complete",
                    "audio_url": f"{self.base_url}/files/{mark}-{n}.mp3",
                    "image_url": f"{self.base_url}/files/{mark}-{n}.jpg",
                    "video_url": "",
                    "user_id": "upstream-account-77",
                    "metadata": {"prompt": task.prompt, "duration": 120.5},
                }
                for n in (1, 2)
            ]
        elif status == "SUCCESS":
            data = {"text": "[Verse]\nla la la", "title": "Lyrics", "status": "complete"}
        return {
            "task_id": task.id,
            "action": task.action,
            "status": status,
            "progress": "100%" if status == "SUCCESS" else "50%",
            "fail_reason": "generation failed" if status == "FAILURE" else "",
            "submit_time": int(task.created),
            "data": data,
        }

    async def _submit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": "error", "message": "unauthorized"}, status=401)
        body = await request.json()
        self.submits.append((request.path, body))
        task_id = f"suno-up-{next(self._ids)}"
        prompt = str(body.get("prompt") or body.get("gpt_description_prompt") or "")
        action = request.match_info["route"].upper()
        hook = body.get("notify_hook")
        self.tasks[task_id] = SunoTask(task_id, action, prompt, time.monotonic(), hook)
        return web.json_response({"code": "success", "message": "", "data": task_id})

    async def _fetch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": "error", "message": "unauthorized"}, status=401)
        body = await request.json()
        self.fetches += 1
        found = [self.task_object(self.tasks[i]) for i in body.get("ids", []) if i in self.tasks]
        return web.json_response({"code": "success", "message": "", "data": found})

    async def _file(self, request: web.Request) -> web.Response:
        return web.Response(body=AUDIO_BYTES, content_type="audio/mpeg")

    async def _notify_forever(self) -> None:
        """Each task with a ``notify_hook`` is posted there, in the envelope, on every change."""
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(self.step_s / 4)
                for task in list(self.tasks.values()):
                    current = self.task_object(task)
                    if not task.hook or (task.notified and task.notified[-1] == current["status"]):
                        continue
                    task.notified.append(current["status"])
                    body = orjson.dumps({"code": "success", "message": "", "data": current})
                    headers = {"Content-Type": "application/json"}
                    try:
                        async with session.post(task.hook, data=body, headers=headers):
                            pass
                    except aiohttp.ClientError:
                        pass
