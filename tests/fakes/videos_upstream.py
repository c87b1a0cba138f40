"""A fake OpenAI Videos API (and Azure OpenAI's v1 form of it), tasks moving on a clock.

A video is ``queued``, ``in_progress`` after one ``step_s`` and ``completed`` (``failed`` when
the prompt says ``fail``) after two. Content is a few MiB of MP4-looking bytes, sent in chunks.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["VIDEO_BYTES", "VIDEOS_SECRET", "FakeVideos"]

VIDEOS_SECRET = "sk-videos-upstream-SECRET-777"
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 12_288  # ~3 MiB
THUMBNAIL_BYTES = b"RIFF\x00\x00\x00\x00WEBPVP8 thumbnail"


@dataclass
class FakeVideo:
    id: str
    fields: dict[str, Any]
    created: float
    reference_bytes: int = 0
    deleted: bool = False
    polls: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class FakeVideos:
    def __init__(self, *, step_s: float = 0.2) -> None:
        self.step_s = step_s
        self.videos: dict[str, FakeVideo] = {}
        self.content_reads = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeVideos:
        app = web.Application(middlewares=[self._auth], client_max_size=32 * 1024 * 1024)
        for prefix in ("/v1", "/openai/v1"):
            app.router.add_post(prefix + "/videos", self._create)
            app.router.add_get(prefix + "/videos/{id}", self._retrieve)
            app.router.add_delete(prefix + "/videos/{id}", self._delete)
            app.router.add_get(prefix + "/videos/{id}/content", self._content)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        azure = request.path.startswith("/openai/")
        ok = (
            request.headers.get("api-key") == VIDEOS_SECRET
            if azure
            else request.headers.get("Authorization") == f"Bearer {VIDEOS_SECRET}"
        )
        if not ok:
            error = {"message": "bad key", "type": "invalid_request_error", "code": None}
            return web.json_response({"error": error}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def resource(self, video: FakeVideo) -> dict[str, Any]:
        age = time.monotonic() - video.created
        status, progress = "queued", 0
        if age >= self.step_s:
            status, progress = "in_progress", 50
        if age >= 2 * self.step_s:
            failed = "fail" in str(video.fields.get("prompt"))
            status, progress = ("failed", 50) if failed else ("completed", 100)
        return {
            "id": video.id,
            "object": "video",
            "model": video.fields.get("model", "sora-2"),
            "status": status,
            "progress": progress,
            "created_at": int(time.time()),
            "completed_at": int(time.time()) if status == "completed" else None,
            "expires_at": int(time.time()) + 3600 if status == "completed" else None,
            "prompt": video.fields.get("prompt"),
            "size": video.fields.get("size", "720x1280"),
            "seconds": str(video.fields.get("seconds", "4")),
            "remixed_from_video_id": None,
            "error": {"code": "failed", "message": "moderation"} if status == "failed" else None,
        }

    async def _create(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {}
        reference = 0
        if request.content_type == "multipart/form-data":
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    reference = len(value.file.read())
                else:
                    fields[name] = value
        else:
            fields = await request.json()
        if not fields.get("prompt"):
            error = {"message": "prompt is required", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
        video_id = f"video_up{next(self._ids)}"
        video = FakeVideo(video_id, fields, time.monotonic(), reference)
        video.headers = dict(request.headers)
        self.videos[video_id] = video
        return web.json_response(self.resource(video))

    def _find(self, request: web.Request) -> FakeVideo | None:
        video = self.videos.get(request.match_info["id"])
        return None if video is None or video.deleted else video

    async def _retrieve(self, request: web.Request) -> web.Response:
        video = self._find(request)
        if video is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        video.polls += 1
        return web.json_response(self.resource(video))

    async def _delete(self, request: web.Request) -> web.Response:
        video = self._find(request)
        if video is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        video.deleted = True
        return web.json_response({"id": video.id, "object": "video.deleted", "deleted": True})

    async def _content(self, request: web.Request) -> web.StreamResponse:
        video = self._find(request)
        if video is None or self.resource(video)["status"] != "completed":
            return web.json_response({"error": {"message": "not ready"}}, status=404)
        self.content_reads += 1
        thumbnail = request.query.get("variant") == "thumbnail"
        data = THUMBNAIL_BYTES if thumbnail else VIDEO_BYTES
        response = web.StreamResponse(
            headers={"Content-Type": "image/webp" if thumbnail else "video/mp4"}
        )
        response.content_length = len(data)
        await response.prepare(request)
        for start in range(0, len(data), 256 * 1024):
            await response.write(data[start : start + 256 * 1024])
        await response.write_eof()
        return response
