"""The providers the conformance suite runs, and how to read what each fake upstream received.

ADDING A PROVIDER (e.g. gemini) — one fake, one entry:
  1. write ``tests/fakes/<provider>_upstream.py`` speaking the provider's real wire format and
     recording what it receives (and the violations it rejected);
  2. add a ``ProviderCase`` to ``PROVIDERS`` below: how to start the fake, the channel configs,
     how to turn one received request into a ``Canon`` (the provider-neutral view the shared
     assertions use), how to queue an upstream HTTP error / a malformed body in the provider's
     own error format, and the reply numbers the fake produces.
Every test in ``test_conformance.py`` then runs against it. Logical model names the suite uses
(``MODEL``, ``PRIVATE_MODEL``, ``TRUNCATE_MODEL``) must be served by the channels returned by
``channels``: the second lets remote images resolve to loopback, the third makes the fake cut
its stream short (by a channel header, a model_map entry — whatever the fake understands).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.conformance.gemini_case import (
    GEMINI_REPLY,
    canon_gemini,
    gemini_channels,
    gemini_error,
    gemini_malformed,
    gemini_reset,
    start_gemini,
)
from tests.fakes.anthropic_upstream import UPSTREAM_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import error_body as anthropic_error
from tests.fakes.azure_upstream import AZURE_KEY, FakeAzure
from tests.fakes.openai_upstream import FakeOpenAI, Scripted

__all__ = [
    "Canon",
    "ProviderCase",
    "PROVIDERS",
    "MODEL",
    "PRIVATE_MODEL",
    "TRUNCATE_MODEL",
    "OPENAI_KEY",
]

MODEL = "test-model"
PRIVATE_MODEL = "test-vision-private"
TRUNCATE_MODEL = "test-truncate"
OPENAI_KEY = "sk-upstream-SECRET-do-not-leak-123456"
TRUNCATE_HEADERS = {"x-fake-truncate": "1"}


@dataclass
class Canon:
    """A provider-neutral reading of one upstream request."""

    system: str = ""
    roles: list[str] = field(default_factory=list)  # conversation turns, tool results as user
    texts: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    images: list[tuple[str, ...]] = field(default_factory=list)  # ("data", type, b64) | ("url", u)
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    tool_choice: Any = None  # None | "auto" | "required" | "none" | ("tool", name)
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    stream: bool = False

    def add_turn(self, role: str) -> None:
        if not self.roles or self.roles[-1] != role:
            self.roles.append(role)


@dataclass
class ProviderCase:
    id: str
    start: Callable[[], Coroutine[Any, Any, Any]]  # -> a started fake (run on the loop thread)
    channels: Callable[[Any], list[dict[str, Any]]]
    requests: Callable[[Any], list[Any]]  # what the fake received, oldest first
    canon: Callable[[Any], Canon]  # one received request -> Canon
    script_error: Callable[[Any, int, str, dict[str, str]], None]  # fake, status, message, hdrs
    script_malformed: Callable[[Any], None]
    violations: Callable[[Any], list[str]]
    reset: Callable[[Any], None]
    inlines_images: bool  # True: the gateway fetches remote images; False: URLs pass through
    reply_text: str = "Hello from the fake upstream!"
    prompt_tokens: int = 11
    completion_tokens: int = 6  # for reply_text
    stop_word: str = "fake"  # a word inside reply_text, used as a stop sequence
    extra: dict[str, Any] = field(default_factory=dict)


# --- OpenAI-format upstreams (openai, openai-compatible, azure) ------------------------------


def _openai_text(content: Any) -> list[tuple[str, Any]]:
    if isinstance(content, str):
        return [("text", content)]
    out: list[tuple[str, Any]] = []
    for part in content or ():
        if part.get("type") == "text":
            out.append(("text", part["text"]))
        elif part.get("type") == "image_url":
            out.append(("image", part["image_url"]["url"]))
    return out


def _image_of_url(url: str) -> tuple[str, ...]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return ("data", header.split(";")[0], data)
    return ("url", url)


def canon_openai(received: Any) -> Canon:
    body = received.body
    canon = Canon(stream=bool(body.get("stream")))
    system: list[str] = []
    for message in body["messages"]:
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(text for _, text in _openai_text(message["content"]))
            continue
        canon.add_turn("user" if role == "tool" else role)
        if role == "tool":
            content = message["content"]
            text = (
                content
                if isinstance(content, str)
                else "".join(t for _, t in _openai_text(content))
            )
            canon.tool_results.append((message["tool_call_id"], text))
            continue
        for kind, value in _openai_text(message.get("content")):
            if kind == "text":
                canon.texts.append((role, value))
            else:
                canon.images.append(_image_of_url(value))
        for call in message.get("tool_calls") or ():
            args = orjson.loads(call["function"]["arguments"] or "{}")
            canon.tool_calls.append((call["id"], call["function"]["name"], args))
    canon.system = "\n".join(system)
    canon.tools = [t["function"]["name"] for t in body.get("tools") or ()]
    choice = body.get("tool_choice")
    canon.tool_choice = ("tool", choice["function"]["name"]) if isinstance(choice, dict) else choice
    stop = body.get("stop")
    canon.stop = [stop] if isinstance(stop, str) else list(stop or ())
    canon.max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return canon


def _openai_error(fake: Any, status: int, message: str, headers: dict[str, str]) -> None:
    kind = "invalid_request_error" if status == 400 else "server_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
    fake.script.append(Scripted(status=status, body=body, headers=headers))


def _openai_reset(fake: Any) -> None:
    fake.received.clear()
    fake.script.clear()


def _azure_reset(fake: Any) -> None:
    _openai_reset(fake)
    fake.violations.clear()


async def _start_openai() -> FakeOpenAI:
    return await FakeOpenAI().start()


async def _start_azure() -> FakeAzure:
    return await FakeAzure().start()


def _openai_channels(kind: str) -> Callable[[Any], list[dict[str, Any]]]:
    def channels(fake: Any) -> list[dict[str, Any]]:
        base = {"type": kind, "base_url": fake.base_url, "api_key": OPENAI_KEY}
        return [
            {**base, "name": "main", "models": [MODEL]},
            {**base, "name": "private", "models": [PRIVATE_MODEL]},
            {**base, "name": "truncating", "models": [TRUNCATE_MODEL], "headers": TRUNCATE_HEADERS},
        ]

    return channels


def _azure_channels(fake: Any) -> list[dict[str, Any]]:
    base = {"type": "azure", "base_url": fake.base_url, "api_key": AZURE_KEY}
    return [
        {**base, "name": "main", "model_map": {MODEL: "test-deployment"}},
        {**base, "name": "private", "model_map": {PRIVATE_MODEL: PRIVATE_MODEL}},
        {
            **base,
            "name": "truncating",
            "model_map": {TRUNCATE_MODEL: TRUNCATE_MODEL},
            "headers": TRUNCATE_HEADERS,
            "api_version": "2025-01-01-preview",
        },
    ]


def _openai_case(case_id: str, kind: str) -> ProviderCase:
    return ProviderCase(
        id=case_id,
        start=_start_openai,
        channels=_openai_channels(kind),
        requests=lambda fake: fake.received,
        canon=canon_openai,
        script_error=_openai_error,
        script_malformed=lambda fake: fake.script.append(Scripted(behaviour="malformed")),
        violations=lambda fake: [],
        reset=_openai_reset,
        inlines_images=False,
    )


# --- Anthropic -------------------------------------------------------------------------------


def _anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _tool_result_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(block.get("text", "") for block in content)


def canon_anthropic(received: Any) -> Canon:
    body = received.body
    canon = Canon(stream=bool(body.get("stream")), max_tokens=body.get("max_tokens"))
    system = body.get("system") or ""
    canon.system = system if isinstance(system, str) else "\n".join(b["text"] for b in system)
    for message in body["messages"]:
        role = message["role"]
        canon.add_turn(role)
        for block in _anthropic_blocks(message["content"]):
            kind = block["type"]
            if kind == "text":
                canon.texts.append((role, block["text"]))
            elif kind == "image":
                source = block["source"]
                if source["type"] == "base64":
                    canon.images.append(("data", source["media_type"], source["data"]))
                else:
                    canon.images.append(("url", source["url"]))
            elif kind == "tool_use":
                canon.tool_calls.append((block["id"], block["name"], block["input"]))
            elif kind == "tool_result":
                text = _tool_result_text(block.get("content"))
                canon.tool_results.append((block["tool_use_id"], text))
    canon.tools = [t["name"] for t in body.get("tools") or ()]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        names = {"auto": "auto", "any": "required", "none": "none"}
        canon.tool_choice = (
            ("tool", choice["name"]) if choice["type"] == "tool" else names[choice["type"]]
        )
    canon.stop = list(body.get("stop_sequences") or ())
    return canon


def _anthropic_error(fake: Any, status: int, message: str, headers: dict[str, str]) -> None:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    body = anthropic_error(kinds.get(status, "api_error"), message)
    fake.script.append(Scripted(status=status, body=body, headers=headers))


def _anthropic_reset(fake: Any) -> None:
    fake.received.clear()
    fake.script.clear()
    fake.violations.clear()


async def _start_anthropic() -> FakeAnthropic:
    return await FakeAnthropic().start()


def _anthropic_channels(fake: Any) -> list[dict[str, Any]]:
    base = {"type": "anthropic", "base_url": fake.base_url, "api_key": ANTHROPIC_KEY}
    return [
        {**base, "name": "main", "models": [MODEL]},
        {**base, "name": "private", "models": [PRIVATE_MODEL], "allow_private_image_urls": True},
        {**base, "name": "truncating", "models": [TRUNCATE_MODEL], "headers": TRUNCATE_HEADERS},
    ]


PROVIDERS: list[ProviderCase] = [
    _openai_case("openai", "openai"),
    _openai_case("openai-compatible", "openai-compatible"),
    ProviderCase(
        id="azure",
        start=_start_azure,
        channels=_azure_channels,
        requests=lambda fake: fake.received,
        canon=canon_openai,
        script_error=_openai_error,
        script_malformed=lambda fake: fake.script.append(Scripted(behaviour="malformed")),
        violations=lambda fake: fake.violations,
        reset=_azure_reset,
        inlines_images=False,
    ),
    ProviderCase(
        id="anthropic",
        start=_start_anthropic,
        channels=_anthropic_channels,
        requests=lambda fake: fake.received,
        canon=canon_anthropic,
        script_error=_anthropic_error,
        script_malformed=lambda fake: fake.script.append(Scripted(behaviour="malformed")),
        violations=lambda fake: fake.violations,
        reset=_anthropic_reset,
        inlines_images=True,
    ),
    ProviderCase(
        id="gemini",
        start=start_gemini,
        channels=gemini_channels(MODEL, PRIVATE_MODEL, TRUNCATE_MODEL),
        requests=lambda fake: fake.received,
        canon=canon_gemini,
        script_error=gemini_error,
        script_malformed=gemini_malformed,
        violations=lambda fake: fake.violations,
        reset=gemini_reset,
        inlines_images=True,
        reply_text=GEMINI_REPLY,
        prompt_tokens=12,
        completion_tokens=4,
        stop_word="Gemini",
    ),
]
