"""A fake OpenAI images API: generations (JSON), edits and variations (multipart), streamed
partial images, on a real socket.

Uploads are parsed with aiohttp's own multipart reader (not Sluice's parser), each file part
recorded by name, filename, content type and SHA-256, with the Content-Length the request came
with. Answers are OpenAI's shapes: ``data`` items with ``url`` or ``b64_json`` (a valid PNG),
and for GPT image models ``usage`` with its input-token split, ``size``, ``quality``,
``background`` and ``output_format``; streams are ``event:``-named SSE events. With
``azure=True`` the same API sits behind Azure's addressing (deployment path, ``api-version``,
``api-key``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from tests.fakes.server import serve_on_loopback

__all__ = ["FakeImages", "ImageCall", "OUTPUT_TOKENS", "PNG", "Upload"]


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x7f\x20\x90" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png(4, 4)  # what every generated image "is"
PARTIAL_PNG = _png(2, 2)
# Output tokens per image (OpenAI's table for gpt-image-1), what the fake reports.
OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
IMAGE_TOKENS_PER_INPUT = 194  # reported per input image (mask included) of an edit


@dataclass(frozen=True)
class Upload:
    name: str
    filename: str
    content_type: str
    sha256: str
    size: int


@dataclass
class ImageCall:
    path: str
    headers: dict[str, str]
    fields: dict[str, Any]  # the JSON body, or the form's text fields
    uploads: list[Upload] = field(default_factory=list)
    content_length: int | None = None


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}  # fmt: skip
    return web.json_response(body, status=status)


class FakeImages:
    def __init__(self, *, report_usage: bool = True, azure: bool = False) -> None:
        self.report_usage = report_usage
        self.azure = azure
        self.fail_with: int | None = None  # answer this status instead
        self.truncate_stream = False  # end a stream before its completed event
        self.event_delay_s = 0.0  # between a stream's events
        self.calls: list[ImageCall] = []
        self.azure_key = "azure-images-FAKE-key-0123456789"
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        root = f"http://127.0.0.1:{self.port}"
        return root if self.azure else root + "/v1"

    async def start(self) -> FakeImages:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        prefix = "/openai/deployments/{deployment}" if self.azure else "/v1"
        app.router.add_post(prefix + "/images/generations", self._generations)
        app.router.add_post(prefix + "/images/edits", self._edits)
        app.router.add_post(prefix + "/images/variations", self._variations)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- requests -----------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.azure:
            if not request.query.get("api-version"):
                return _error(404, "Resource not found")
            if request.headers.get("api-key") != self.azure_key:
                return _error(401, "Access denied due to invalid subscription key.")
        elif not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "You didn't provide an API key.")
        return None

    async def _json_call(self, request: web.Request) -> ImageCall:
        body = orjson.loads(await request.read())
        call = ImageCall(request.path, dict(request.headers), body, [], request.content_length)
        self.calls.append(call)
        return call

    async def _form_call(self, request: web.Request) -> ImageCall:
        call = ImageCall(request.path, dict(request.headers), {}, [], request.content_length)
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            name = part.name or ""
            if part.filename is not None:
                media = part.headers.get("content-type", "")
                digest = hashlib.sha256(data).hexdigest()
                call.uploads.append(Upload(name, part.filename, media, digest, len(data)))
            elif name in call.fields:
                raise AssertionError(f"text field {name!r} sent twice")
            else:
                call.fields[name] = data.decode()
        self.calls.append(call)
        return call

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        call = await self._json_call(request)
        if "stream_options" in call.fields:
            return _error(400, "Unknown parameter: 'stream_options'.", "stream_options")
        if not call.fields.get("prompt"):
            return _error(400, "Missing required parameter: 'prompt'.", "prompt")
        return await self._answer(request, call, "image_generation", inputs=0)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Expected a multipart/form-data body.")
        call = await self._form_call(request)
        images = [u for u in call.uploads if u.name in ("image", "image[]")]
        if not images or not call.fields.get("prompt"):
            return _error(400, "Missing required parameter: 'image' or 'prompt'.")
        return await self._answer(request, call, "image_edit", inputs=len(call.uploads))

    async def _variations(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        call = await self._form_call(request)
        if [u.name for u in call.uploads] != ["image"]:
            return _error(400, "Expected exactly one 'image' file.", "image")
        return await self._answer(request, call, "image_variation", inputs=1)

    # --- answers ------------------------------------------------------------------------------

    def _usage(self, fields: dict[str, Any], size: str, quality: str, inputs: int) -> Any:
        text = len(str(fields.get("prompt", "")).split())
        image = inputs * IMAGE_TOKENS_PER_INPUT
        output = OUTPUT_TOKENS[quality][size] * int(fields.get("n") or 1)
        return {"total_tokens": text + image + output, "input_tokens": text + image,
                "output_tokens": output,
                "input_tokens_details": {"text_tokens": text, "image_tokens": image}}  # fmt: skip

    async def _answer(
        self, request: web.Request, call: ImageCall, kind: str, inputs: int
    ) -> web.StreamResponse:
        if self.fail_with is not None:  # after the request was read (and recorded) whole
            return _error(self.fail_with, "The server is busy.")
        fields = call.fields
        model = str(fields.get("model", ""))
        # Azure ignores the body's model: its deployment (in the path) names what it serves.
        gpt_image = "gpt-image" in model + request.match_info.get("deployment", "")
        n = int(fields.get("n") or 1)
        stream = fields.get("stream") in (True, "true")
        if gpt_image:
            size = fields.get("size") if fields.get("size") not in (None, "auto") else "1024x1024"
            quality = (
                fields.get("quality") if fields.get("quality") not in (None, "auto") else "medium"
            )
            usage = self._usage(fields, str(size), str(quality), inputs)
            if stream:
                return await self._stream(request, kind, str(size), str(quality), usage, fields)
            payload: dict[str, Any] = {
                "created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)],
                "background": "opaque", "output_format": "png", "size": size, "quality": quality,
            }  # fmt: skip
            if self.report_usage:
                payload["usage"] = usage
            return web.json_response(payload)
        as_b64 = fields.get("response_format") == "b64_json"
        items = [
            {"b64_json": base64.b64encode(PNG).decode()}
            if as_b64
            else {"url": f"https://images.example/{kind}/{index}.png"}
            for index in range(n)
        ]
        if kind == "image_generation" and model.startswith("dall-e-3"):
            for item in items:
                item["revised_prompt"] = f"A revised {fields.get('prompt')}"
        return web.json_response({"created": int(time.time()), "data": items})

    async def _stream(
        self,
        request: web.Request,
        kind: str,
        size: str,
        quality: str,
        usage: Any,
        fields: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        common = {"created_at": int(time.time()), "size": size, "quality": quality,
                  "background": "opaque", "output_format": "png"}  # fmt: skip
        partials = int(fields.get("partial_images") or 0)
        for index in range(partials):
            event = {"type": f"{kind}.partial_image", "partial_image_index": index,
                     "b64_json": base64.b64encode(PARTIAL_PNG).decode(), **common}  # fmt: skip
            frame = f"event: {kind}.partial_image\ndata: ".encode() + orjson.dumps(event)
            # Sent in two writes, split inside the event: the gateway must join them.
            await response.write(frame[:25])
            await asyncio.sleep(0.01)
            await response.write(frame[25:] + b"\n\n")
            await asyncio.sleep(self.event_delay_s)
        if not self.truncate_stream:
            done = {"type": f"{kind}.completed", "b64_json": base64.b64encode(PNG).decode(),
                    **common, "usage": usage}  # fmt: skip
            await response.write(f"event: {kind}.completed\ndata: ".encode() + orjson.dumps(done))
            await response.write(b"\n\n")
        await response.write_eof()
        return response
