"""A fake Cohere API speaking v2 rerank (``POST /v2/rerank``) over a real socket.

It checks what the real API checks (Bearer key, required ``model``, a string ``query``,
``documents`` as strings only, known fields only) and answers an error ``{"message": ...}``
with Cohere's statuses otherwise; each accepted request is recorded, each refused one is a
violation the test fails on. Scores count the query's words found in each document; billed
search units are Cohere's: one per started 100 documents, a document longer than
``chunk_chars`` counting once per chunk.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["FakeCohere", "relevance"]

_FIELDS = {"model", "query", "documents", "top_n", "max_tokens_per_doc"}
_WORD = re.compile(r"\w+")


def relevance(query: str, document: str) -> float:
    """Share of the query's words the document contains, in [0, 1]."""
    words = {w.lower() for w in _WORD.findall(query)}
    found = {w.lower() for w in _WORD.findall(document)}
    return len(words & found) / len(words) if words else 0.0


@dataclass
class FakeCohere:
    api_key: str = "co-upstream-SECRET-key-0123456789"
    chunk_chars: int = 2_000
    # Canned (status, body) answers for the next requests, instead of ranking.
    script: list[tuple[int, bytes]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeCohere:
        app = web.Application()
        app.router.add_post("/v2/rerank", self._rerank)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, status: int, message: str) -> web.Response:
        self.violations.append(message)
        return web.json_response({"message": message}, status=status)

    async def _rerank(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response({"message": "invalid api token"}, status=401)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._refuse(400, "invalid request: body is not JSON")
        if not isinstance(body, dict):
            return self._refuse(400, "invalid request: body is not an object")
        problem = _problem(body)
        if problem is not None:
            return self._refuse(400 if "unknown field" in problem else 422, problem)
        self.received.append(body)
        if self.script:
            status, canned = self.script.pop(0)
            return web.Response(status=status, body=canned, content_type="application/json")
        return web.json_response(self._ranked(body))

    def _ranked(self, body: dict[str, Any]) -> dict[str, Any]:
        documents: list[str] = body["documents"]
        scored = sorted(
            ((relevance(body["query"], d), i) for i, d in enumerate(documents)),
            key=lambda pair: (-pair[0], pair[1]),
        )
        top_n = body.get("top_n")
        if top_n is not None:
            scored = scored[:top_n]
        chunks = sum(max(1, math.ceil(len(d) / self.chunk_chars)) for d in documents)
        return {
            "id": str(uuid.uuid4()),
            "results": [{"index": i, "relevance_score": score} for score, i in scored],
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": math.ceil(chunks / 100)},
            },
        }


def _problem(body: dict[str, Any]) -> str | None:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return f"invalid request: unknown field {unknown[0]!r}"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid request: model is required"
    if not isinstance(body.get("query"), str):
        return "invalid request: query must be a string"
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        return "invalid request: documents must be a non-empty list"
    if not all(isinstance(d, str) for d in documents):
        return "invalid request: v2 documents must be strings"
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
        return "invalid request: top_n must be a positive integer"
    return None
