"""A fast fake OpenAI upstream used as the common backend of every benchmark target.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length and chunked request bodies)
on a raw asyncio Protocol: httptools parses when installed, a small hand parser otherwise,
and uvloop drives the loop when installed.  No framework sits in the hot path.

Routes
  POST /v1/chat/completions   chat.completion JSON, or SSE when ``"stream": true``
  GET  /v1/models             a model list
  GET  /health                200 "ok"
  GET  /bench/stats           request counters (JSON), to prove traffic reached upstream

Tuning per request (headers win over the body, the body over CLI defaults)
  chunks:       header ``x-bench-chunks``, else ``max_tokens`` / ``max_completion_tokens``
  latency:      header ``x-bench-latency-ms`` (delay before the response starts)
  chunk gap:    header ``x-bench-chunk-delay-ms`` (delay between streamed chunks)

Streaming follows OpenAI's wire format: a role chunk, one chunk per content token, a
chunk with ``finish_reason``, then (with ``stream_options.include_usage``) a chunk with
``"choices": []`` and ``usage``, and finally ``data: [DONE]``.

Run: ``python bench/fake_upstream.py --port 8011`` (``--port 0`` picks a free one); it
prints ``READY http://HOST:PORT`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a Sluice dependency

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_CHUNKS = 100_000
# Content tokens cycle through distinct words: some gateways (LiteLLM) abort a stream that
# repeats the very same chunk over and over.
WORDS = tuple(
    (
        "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
        "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
    ).split()
)


def completion_text(n: int) -> str:
    return "".join(f"{WORDS[i % len(WORDS)]} " for i in range(n))


class BadRequestError(Exception):
    """The bytes on the wire are not an HTTP/1.x request we can parse."""


@dataclass(slots=True)
class Request:
    method: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: bytes
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Settings:
    default_chunks: int = 16
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    model: str = "gpt-4o-mini"
    api_key: str | None = None


@dataclass(slots=True)
class Stats:
    requests: int = 0
    chat_json: int = 0
    chat_stream: int = 0
    chunks_sent: int = 0
    speech: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "chat_json": self.chat_json,
            "chat_stream": self.chat_stream,
            "chunks_sent": self.chunks_sent,
            "speech": self.speech,
            "errors": self.errors,
            "uptime_s": round(time.time() - self.started, 3),
        }


@dataclass(slots=True)
class Delayed:
    """A response written in parts: the first after ``first_delay``, the rest ``gap`` apart."""

    parts: list[bytes]
    first_delay: float
    gap: float


Response = bytes | Delayed


# --------------------------------------------------------------------------- parsers


class Parser(Protocol):
    def feed(self, data: bytes) -> list[Request]: ...


class HandParser:
    """Minimal HTTP/1.x request parser (Content-Length and chunked bodies)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Request]:
        self._buf += data
        out: list[Request] = []
        while (req := self._parse_one()) is not None:
            out.append(req)
        return out

    def _parse_one(self) -> Request | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise BadRequestError("request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError as exc:
            raise BadRequestError("bad request line") from exc
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadRequestError("bad header line")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            decoded = _dechunk(buf, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError as exc:
                raise BadRequestError("bad content-length") from exc
            if length < 0 or length > MAX_BODY_BYTES:
                raise BadRequestError("bad content-length")
            if len(buf) < start + length:
                return None
            body, consumed = bytes(buf[start : start + length]), start + length
        del buf[:consumed]
        conn = headers.get(b"connection", b"").lower()
        keep_alive = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
        return Request(method, target, headers, body, keep_alive)


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``pos``; None while incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise BadRequestError("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2
        if sum(map(len, parts)) > MAX_BODY_BYTES:
            raise BadRequestError("body too large")


class HttptoolsParser:
    """Adapter from httptools' callback parser to a list of complete requests."""

    def __init__(self) -> None:
        import httptools

        self._errors: tuple[type[Exception], ...] = (httptools.HttpParserError,)
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[Request] = []
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        p = self._parser
        body = b"".join(self._body)
        self._done.append(
            Request(p.get_method(), self._url, self._headers, body, p.should_keep_alive())
        )

    def feed(self, data: bytes) -> list[Request]:
        try:
            self._parser.feed_data(data)
        except self._errors as exc:
            raise BadRequestError(str(exc)) from exc
        out, self._done = self._done, []
        return out


def parser_factory(kind: str) -> Callable[[], Parser]:
    if kind in ("auto", "httptools"):
        try:
            import httptools  # noqa: F401

            return HttptoolsParser
        except ImportError:
            if kind == "httptools":
                raise
    return HandParser


# --------------------------------------------------------------------------- responses

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}


def _head(status: int, content_type: bytes, length: int | None, keep_alive: bool) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
        b"Server: fake-openai",
        b"Content-Type: " + content_type,
    ]
    if length is None:
        lines += [b"Cache-Control: no-cache", b"Transfer-Encoding: chunked"]
    else:
        lines.append(b"Content-Length: %d" % length)
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def json_response(status: int, obj: Any, keep_alive: bool) -> bytes:
    body = _dumps(obj)
    return _head(status, b"application/json", len(body), keep_alive) + body


def error_response(status: int, message: str, kind: str, keep_alive: bool) -> bytes:
    err = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return json_response(status, err, keep_alive)


def _frame(data: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n" % len(event) + event + b"\r\n"


_LAST_CHUNK = b"0\r\n\r\n"


def _speech_wav(seconds: float, rate: int = 24_000) -> bytes:
    """What the fake "speaks": a mono 16-bit WAV of silence (header, then samples)."""
    samples = round(seconds * rate) * 2
    header = (
        b"RIFF" + (36 + samples).to_bytes(4, "little") + b"WAVEfmt "
        + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
        + rate.to_bytes(4, "little") + (rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        + b"data" + samples.to_bytes(4, "little")
    )  # fmt: skip
    return header + bytes(samples)


SPEECH_WAV = _speech_wav(1.0)  # 48 KB: one second at 24 kHz, OpenAI's PCM/WAV rate
SPEECH_CHUNK = 8192


def _int_header(headers: dict[bytes, bytes], name: bytes) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _float_header(headers: dict[bytes, bytes], name: bytes, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        return default


def _prompt_tokens(messages: Any) -> int:
    """A cheap, deterministic stand-in for a tokenizer: ~4 characters per token."""
    if not isinstance(messages, list):
        return 1
    chars = 0
    for msg in messages:
        if isinstance(msg, dict):
            content = msg.get("content")
            chars += len(content) if isinstance(content, str) else len(str(content))
    return max(1, chars // 4 + 3 * len(messages))


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._expected_auth = (
            b"Bearer " + settings.api_key.encode() if settings.api_key is not None else None
        )
        self._models = _dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": settings.model,
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": "bench",
                    }
                ],
            }
        )

    def handle(self, req: Request) -> Response:
        self.stats.requests += 1
        path = req.path.split(b"?", 1)[0]
        ka = req.keep_alive
        if req.method == b"POST" and path.endswith(b"/chat/completions"):
            if (
                self._expected_auth is not None
                and req.headers.get(b"authorization") != self._expected_auth
            ):
                self.stats.errors += 1
                return error_response(
                    401, "Incorrect API key provided", "invalid_request_error", ka
                )
            return self._chat(req)
        if req.method == b"POST" and path.endswith(b"/audio/speech"):
            if (
                self._expected_auth is not None
                and req.headers.get(b"authorization") != self._expected_auth
            ):
                self.stats.errors += 1
                return error_response(
                    401, "Incorrect API key provided", "invalid_request_error", ka
                )
            return self._speech(req)
        if req.method == b"GET":
            if path in (b"/v1/models", b"/models"):
                return _head(200, b"application/json", len(self._models), ka) + self._models
            if path in (b"/health", b"/healthz", b"/readyz"):
                return _head(200, b"text/plain", 2, ka) + b"ok"
            if path == b"/bench/stats":
                return json_response(200, self.stats.as_dict(), ka)
        self.stats.errors += 1
        return error_response(
            404, f"no route {req.method.decode()} {path.decode()}", "not_found", ka
        )

    def _chat(self, req: Request) -> Response:
        ka = req.keep_alive
        try:
            payload = _loads(req.body)
        except ValueError:
            self.stats.errors += 1
            return error_response(400, "body is not valid JSON", "invalid_request_error", ka)
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            self.stats.errors += 1
            return error_response(400, "'messages' is required", "invalid_request_error", ka)
        s = self.settings
        chunks = _int_header(req.headers, b"x-bench-chunks")
        if chunks is None:
            limit = payload.get("max_tokens") or payload.get("max_completion_tokens")
            chunks = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        n = min(MAX_CHUNKS, max(1, chunks if chunks is not None else s.default_chunks))
        latency = _float_header(req.headers, b"x-bench-latency-ms", s.latency_ms) / 1000.0
        gap = _float_header(req.headers, b"x-bench-chunk-delay-ms", s.chunk_delay_ms) / 1000.0
        raw_model = payload.get("model")
        model = raw_model if isinstance(raw_model, str) else s.model
        usage = {
            "prompt_tokens": (pt := _prompt_tokens(payload["messages"])),
            "completion_tokens": n,
            "total_tokens": pt + n,
        }
        rid = f"chatcmpl-bench{next(self._ids)}"
        created = int(time.time())
        if payload.get("stream") is True:
            opts = payload.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            self.stats.chat_stream += 1
            self.stats.chunks_sent += n
            return self._stream(rid, created, model, n, usage, include_usage, latency, gap, ka)
        self.stats.chat_json += 1
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": completion_text(n),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "length" if chunks is not None else "stop",
                }
            ],
            "usage": usage,
        }
        resp = json_response(200, body, ka)
        return Delayed([resp], latency, 0.0) if latency > 0 else resp

    def _speech(self, req: Request) -> Response:
        """Text to speech: a WAV answer in HTTP chunks, the first sent at once (after the
        configured latency), the rest ``chunk_delay_ms`` apart, as a TTS upstream renders."""
        ka = req.keep_alive
        try:
            payload = _loads(req.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("input"), str):
            self.stats.errors += 1
            return error_response(400, "'input' is required", "invalid_request_error", ka)
        s = self.settings
        latency = _float_header(req.headers, b"x-bench-latency-ms", s.latency_ms) / 1000.0
        gap = _float_header(req.headers, b"x-bench-chunk-delay-ms", s.chunk_delay_ms) / 1000.0
        self.stats.speech += 1
        audio = SPEECH_WAV
        pieces = [audio[at : at + SPEECH_CHUNK] for at in range(0, len(audio), SPEECH_CHUNK)]
        chunks = [b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces]
        first = _head(200, b"audio/wav", None, ka) + chunks[0]
        rest = [*chunks[1:-1], chunks[-1] + _LAST_CHUNK]
        if latency <= 0 and gap <= 0:
            return first + b"".join(rest)
        return Delayed([first, *rest], latency, gap)

    def _stream(
        self,
        rid: str,
        created: int,
        model: str,
        n: int,
        usage: dict[str, int],
        include_usage: bool,
        latency: float,
        gap: float,
        ka: bool,
    ) -> Response:
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_bench",
        }

        def chunk_json(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj: dict[str, Any] = {**base, "choices": [choice]}
            if include_usage:
                obj["usage"] = None
            return _dumps(obj)

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            return _frame(chunk_json(delta, finish))

        first = _head(200, b"text/event-stream; charset=utf-8", None, ka) + chunk(
            {"role": "assistant", "content": "", "refusal": None}, None
        )
        # Serialise one token chunk with a marker, then splice each word in (all ASCII).
        pre, post = chunk_json({"content": "\x00"}, None).split(b"\\u0000")
        words = [_frame(pre + w.encode() + b" " + post) for w in WORDS[: min(n, len(WORDS))]]
        tokens = [words[i % len(words)] for i in range(n)]
        tail = chunk({}, "stop")
        if include_usage:
            tail += _frame(_dumps({**base, "choices": [], "usage": usage}))
        tail += _frame(b"[DONE]") + _LAST_CHUNK
        if latency <= 0 and gap <= 0:
            return first + b"".join(tokens) + tail
        return Delayed([first, *tokens, tail], latency, gap)


# --------------------------------------------------------------------------- server


class Connection(asyncio.Protocol):
    def __init__(self, app: App, make_parser: Callable[[], Parser]) -> None:
        self._app = app
        self._parser = make_parser()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            requests = self._parser.feed(data)
        except BadRequestError as exc:
            self._app.stats.errors += 1
            if self._transport is not None:
                self._transport.write(error_response(400, str(exc), "invalid_request_error", False))
                self._transport.close()
            return
        self._pending.extend(requests)
        self._drain()

    def _drain(self) -> None:
        # Responses go out in request order; a delayed one holds back the ones behind it.
        while self._pending and self._task is None and self._transport is not None:
            req = self._pending.popleft()
            resp = self._app.handle(req)
            if isinstance(resp, bytes):
                self._transport.write(resp)
                if not req.keep_alive:
                    self._transport.close()
            else:
                self._task = asyncio.get_running_loop().create_task(
                    self._send(resp, req.keep_alive)
                )

    async def _send(self, resp: Delayed, keep_alive: bool) -> None:
        try:
            delay = resp.first_delay
            for part in resp.parts:
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._transport is None or self._transport.is_closing():
                    return
                self._transport.write(part)
                delay = resp.gap
            if not keep_alive and self._transport is not None:
                self._transport.close()
        finally:
            self._task = None
        self._drain()


def install_fast_loop(kind: str) -> str:
    """Use uvloop when asked for (or on ``auto`` when installed); return the loop name."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
        except ImportError:
            if kind == "uvloop":
                raise
    return "asyncio"


async def serve(
    settings: Settings, host: str, port: int, parser: str = "auto"
) -> tuple[asyncio.Server, App]:
    app = App(settings)
    make_parser = parser_factory(parser)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(app, make_parser), host, port, backlog=4096, reuse_address=True
    )
    return server, app


async def _main_async(args: argparse.Namespace, loop_name: str) -> None:
    settings = Settings(
        default_chunks=args.chunks,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        model=args.model,
        api_key=args.api_key,
    )
    server, _ = await serve(settings, args.host, args.port, args.parser)
    port = server.sockets[0].getsockname()[1]
    parser_name = parser_factory(args.parser).__name__
    print(f"READY http://{args.host}:{port} loop={loop_name} parser={parser_name}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=16, help="default streamed chunks / tokens")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between chunks")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    ap.add_argument("--parser", choices=["auto", "httptools", "hand"], default="auto")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = ap.parse_args(argv)
    loop_name = install_fast_loop(args.loop)
    asyncio.run(_main_async(args, loop_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
