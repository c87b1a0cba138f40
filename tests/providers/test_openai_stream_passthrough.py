"""The OpenAI pass-through stream translator forwards runs of ordinary chunks as the bytes they
arrived in. Whatever way the upstream's bytes are cut into reads, the client must get exactly
the frames the upstream sent (minus a usage chunk it did not ask for), in order."""

from __future__ import annotations

import random

import orjson
import pytest

from sluice.providers.azure import AzureAdapter
from sluice.providers.base import DONE_FRAME
from sluice.providers.openai import OpenAIStreamTranslator
from tests.providers.test_azure import make_call


def _chunk(delta: dict[str, object], **extra: object) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        "usage": None,  # what OpenAI sends in every chunk when include_usage is on
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


WORDS = ["Hello", " there", ', \\"error\\"', ' "error"', " [DONE] is", " usage", "!"]
CONTENT = [_chunk({"role": "assistant", "content": ""})] + [_chunk({"content": w}) for w in WORDS]
USAGE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}\n\n'
)


def _cuts(data: bytes, rng: random.Random) -> list[bytes]:
    if rng.random() < 0.2:
        return [data[i : i + 1] for i in range(len(data))]  # one byte per read
    points = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 12))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _run(translator: OpenAIStreamTranslator, pieces: list[bytes]) -> bytes:
    out: list[bytes] = []
    for piece in pieces:
        out.extend(translator.feed(piece))
    if not translator._done:  # noqa: SLF001 - a stream without [DONE]
        out.extend(translator.close())
    return b"".join(out)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("client_wants_usage", [False, True])
def test_any_cut_gives_exactly_the_upstreams_frames(
    seed: int, crlf: bool, client_wants_usage: bool
) -> None:
    rng = random.Random(seed)
    stream = b"".join([*CONTENT, b": keep-alive\n\n", USAGE, DONE_FRAME, b"data: late\n\n"])
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    translator = OpenAIStreamTranslator(strip_usage_chunk=not client_wants_usage)
    got = _run(translator, _cuts(stream, rng))
    expected = b"".join([*CONTENT, *([USAGE] if client_wants_usage else []), DONE_FRAME])
    assert got == expected
    assert translator.usage is not None and translator.usage.completion == 7
    assert translator.failure is None


@pytest.mark.parametrize("seed", range(20))
def test_without_usage_the_delivered_text_is_counted_from_every_chunk(seed: int) -> None:
    """llama.cpp sends no usage: the text for local counting must survive the coalescing."""
    translator = OpenAIStreamTranslator(strip_usage_chunk=True)
    stream = b"".join([*CONTENT, DONE_FRAME])
    got = _run(translator, _cuts(stream, random.Random(seed)))
    assert got == b"".join([*CONTENT, DONE_FRAME])
    assert translator.usage is None
    assert translator.delivered_text() == "".join(WORDS)


@pytest.mark.parametrize("seed", range(20))
def test_an_error_mid_stream_ends_it_after_the_frames_before(seed: int) -> None:
    error = b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n'
    translator = OpenAIStreamTranslator(strip_usage_chunk=True)
    stream = b"".join([*CONTENT[:3], error, *CONTENT[3:], DONE_FRAME])
    got = _run(translator, _cuts(stream, random.Random(seed)))
    assert got.startswith(b"".join(CONTENT[:3]))
    tail = got[len(b"".join(CONTENT[:3])) :]
    assert tail.count(b"\n\n") == 1 and b"overloaded" in tail  # the error frame, then nothing
    assert translator.failure is not None


@pytest.mark.parametrize("seed", range(20))
def test_azure_filter_chunks_are_dropped_from_inside_a_run(seed: int) -> None:
    filter_only = (
        b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
        b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n'
    )
    translator = AzureAdapter().stream_translator(make_call(stream=True))
    stream = b"".join([CONTENT[0], filter_only, *CONTENT[1:], filter_only, DONE_FRAME])
    out: list[bytes] = []
    for piece in _cuts(stream, random.Random(seed)):
        out.extend(translator.feed(piece))
    assert b"".join(out) == b"".join([*CONTENT, DONE_FRAME])
