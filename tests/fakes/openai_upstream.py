"""A fake OpenAI-compatible upstream speaking the real wire format over a real socket.

Behaviour is steered per request by the ``model`` name suffix or by ``FakeOpenAI.script``
(a queue of canned failures), and every received request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.cohere_upstream import relevance
from tests.fakes.openai_responses import FakeResponsesApi
from tests.fakes.server import serve_on_loopback

__all__ = ["FakeOpenAI", "Received", "Scripted"]

REPLY_WORDS = ["Hello", " from", " the", " fake", " upstream", "!"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    peer: Any = None  # the gateway's (host, port): which upstream connection carried it


@dataclass
class Scripted:
    """A canned answer for the next request: HTTP status + body, or a behaviour keyword."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    behaviour: str | None = None  # "truncate", "stall", "malformed", "slow_first_byte"
    delay_s: float = 0.0


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


class FakeOpenAI:
    def __init__(self, *, prompt_tokens: int = 11, send_stream_usage: bool = True) -> None:
        # How /v1/rerank answers: "vllm" (sorted, top_n applied, documents echoed, usage
        # total_tokens only) or "llamacpp" (document order, top_n ignored, no id or documents).
        self.rerank_style = "vllm"
        self.received: list[Received] = []
        self.script: list[Scripted] = []
        self.prompt_tokens = prompt_tokens
        self.send_stream_usage = send_stream_usage
        # Seconds between a stream's [DONE] and the end of its body (real servers may send the
        # chunked terminator in a later packet).
        self.eof_delay_s = 0.0
        self.disconnects = 0
        self.disconnect_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.responses_api = FakeResponsesApi(REPLY_WORDS)  # OpenAI's own /v1/responses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/responses", self._responses)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> Received:
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        item = Received(request.path, dict(request.headers), orjson.loads(raw), raw, peer)
        self.received.append(item)
        return item

    async def _scripted(self, request: web.Request) -> web.StreamResponse | None:
        if not self.script:
            return None
        step = self.script.pop(0)
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.behaviour is None:
            return web.Response(
                status=step.status, body=step.body or b"{}", headers=step.headers,
                content_type="application/json",
            )  # fmt: skip
        if step.behaviour == "malformed":
            return web.Response(status=200, body=b"{not json", content_type="application/json")
        if step.behaviour == "stall":
            await asyncio.sleep(3600)
        return None

    # --- chat ---------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        body = received.body
        model = body.get("model", "unknown")
        n = int(body.get("n") or 1)
        words = REPLY_WORDS
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if isinstance(limit, int) and limit < len(words):
            words, finish = words[:limit], "length"
        wants_tool = bool(body.get("tools")) and body.get("tool_choice") != "none"
        if body.get("stream"):
            return await self._chat_stream(request, body, model, words, finish, wants_tool)
        choices = []
        for index in range(n):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(words),
                "refusal": None,
            }
            choice_finish = finish
            if wants_tool:
                tool = body["tools"][0]["function"]["name"]
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": tool, "arguments": '{"city": "Paris"}'},
                        }
                    ],
                }
                choice_finish = "tool_calls"
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": choice_finish,
                }
            )
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": _usage(self.prompt_tokens, len(words) * n),
            "system_fingerprint": "fp_fake",
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _chat_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        model: str,
        words: list[str],
        finish: str,
        wants_tool: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())
        delay = float(request.headers.get("x-fake-chunk-delay", "0"))
        truncate = request.headers.get("x-fake-truncate") == "1"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],  # fmt: skip
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        try:
            await response.write(chunk({"role": "assistant", "content": ""}))
            if wants_tool:
                tool = body["tools"][0]["function"]["name"]
                pieces = ['{"ci', 'ty": "Pa', 'ris"}']
                first_call = {
                    "index": 0,
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": tool, "arguments": ""},
                }
                await response.write(chunk({"tool_calls": [first_call]}))
                for piece in pieces:
                    await response.write(
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    )
                finish = "tool_calls"
                completion = 7
            else:
                for i, word in enumerate(words):
                    if delay:
                        await asyncio.sleep(delay)
                    await response.write(chunk({"content": word}))
                    if truncate and i == 1:
                        return response
                completion = len(words)
            await response.write(chunk({}, finish))
            if include_usage and self.send_stream_usage:
                usage_chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(self.prompt_tokens, completion),
                }
                await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            if self.eof_delay_s:
                await asyncio.sleep(self.eof_delay_s)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            self.disconnect_event.set()
            raise
        return response

    # --- other endpoints ----------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        return await self.responses_api.answer(request, received.body)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        payload = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": received.body.get("model"),
            "choices": [{"text": " world", "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(self.prompt_tokens, 2),
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        inputs = received.body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(items))
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": received.body.get("model"),
            "usage": {"prompt_tokens": 5 * len(items), "total_tokens": 5 * len(items)},
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        payload = {
            "id": "modr-fake",
            "model": received.body.get("model"),
            "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _rerank(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        body = received.body
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list) or not documents:
            error = {"message": "query and documents are required", "type": "BadRequestError"}
            return web.json_response({"error": error}, status=400)
        texts = [d if isinstance(d, str) else orjson.dumps(d).decode() for d in documents]
        scores = [relevance(query, text) for text in texts]
        tokens = sum(3 * (len(query.split()) + len(text.split())) + 1 for text in texts)
        if self.rerank_style == "llamacpp":
            payload: dict[str, Any] = {
                "model": body.get("model"),
                "object": "list",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)],
            }
            return web.Response(body=orjson.dumps(payload), content_type="application/json")
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[: body.get("top_n")]
        payload = {
            "id": "rerank-fake-vllm",
            "model": body.get("model"),
            "usage": {"total_tokens": tokens},
            "results": [
                {"index": i, "document": {"text": texts[i]}, "relevance_score": scores[i]}
                for i in order
            ],
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": []})
