"""The local audio engines over HTTP in OpenAI's wire format: the upstream of ``local-audio``
channels.

``sluice serve`` runs this as a child process on loopback (``python -m
sluice.local_audio.server --port N``), as it runs llama.cpp for the chat channel, for the same
reasons (docs/providers.md, "Local audio"): synthesis and recognition are CPU-bound native code
that would compete with the gateway's event loop, a crash in them must not take the gateway
down, and a server speaking OpenAI's format lets the relay treat the channel like any other
OpenAI upstream. The engines load once, before the server answers ``/health``; every call runs
in a worker thread, and each engine computes for one request at a time, a sentence or a
30-second window per turn (``turns.py``).

- ``POST /v1/audio/speech``: JSON in, audio out. ``wav`` and ``pcm`` are streamed a sentence
  at a time (the WAV header gives no length, as OpenAI's streamed WAV does not); the other
  formats are encoded whole.
- ``POST /v1/audio/transcriptions``, ``/v1/audio/translations``: a multipart upload (25 MB at
  most, OpenAI's limit), answered in the asked ``response_format``.
- ``GET /v1/models``, ``GET /health``.

Errors are OpenAI-shaped: a refused field is a 400 naming it (``param``), an unknown model a
404 ``model_not_found``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import struct
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SluiceError,
)
from sluice.local_audio.asr import (
    LOCAL_TRANSCRIPTION_MODEL,
    TranscriptionEngine,
    check_transcription_request,
    transcription_available,
)
from sluice.local_audio.formats import AudioFormatError, content_type
from sluice.local_audio.transcript_formats import (
    Task,
    check_transcription_format,
    transcription_body,
)
from sluice.local_audio.tts import (
    LOCAL_SPEECH_MODEL,
    SAMPLE_RATE,
    SpeechEngine,
    speech_available,
    validate_speech_request,
)
from sluice.relay.multipart import SpooledForm, read_multipart

if TYPE_CHECKING:
    from sluice.local_audio.codecs import Samples

__all__ = ["AudioEngines", "MAX_UPLOAD_BYTES", "create_app", "main"]

log = logging.getLogger("sluice.local_audio")

MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024  # OpenAI's limit for an audio file
# The form around the file: its text fields (prompt, model, ...) and part headers.
_FORM_OVERHEAD_BYTES: Final = 1024 * 1024
_MAX_JSON_BYTES: Final = 1024 * 1024  # a speech request is at most 4,096 characters of input
# Formats whose bytes can be sent a sentence at a time: raw samples after a fixed header.
_STREAMED_FORMATS: Final = frozenset({"wav", "pcm"})
_JSON: Final = "application/json"

E = TypeVar("E", SpeechEngine, TranscriptionEngine)


@dataclass(frozen=True, slots=True)
class AudioEngines:
    """The engines this server answers with; an engine that is not installed is None."""

    speech: SpeechEngine | None
    transcription: TranscriptionEngine | None

    @classmethod
    def installed(cls, threads: int = 1) -> AudioEngines:
        return cls(
            speech=SpeechEngine(threads) if speech_available() else None,
            transcription=TranscriptionEngine(threads) if transcription_available() else None,
        )

    def models(self) -> list[str]:
        served = [
            (LOCAL_SPEECH_MODEL, self.speech),
            (LOCAL_TRANSCRIPTION_MODEL, self.transcription),
        ]
        return [name for name, engine in served if engine is not None]

    def load(self) -> None:
        for engine in (self.speech, self.transcription):
            if engine is not None:
                engine.load()


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    text: str
    voice: str
    response_format: str
    speed: float


def _model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model `{model}` does not exist on the local audio server.",
        param="model",
        code="model_not_found",
    )


def _engine(engine: E | None, model: object, served: str) -> E:
    """The engine serving ``model``, or 404 for another model (or an engine not installed)."""
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    if model != served:
        raise _model_not_found(model)
    if engine is None:
        raise NotFound(
            f"The model `{model}` is not installed on the local audio server "
            "(pip install 'sluice[local]').",
            param="model",
            code="model_not_found",
        )
    return engine


def _text_field(body: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if value is None:
        raise InvalidRequest(f"you must provide a {name} parameter", param=name)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", param=name)
    return value


def _speech_request(body: Mapping[str, Any]) -> SpeechRequest:
    """The fields of a speech request, checked (the model is checked by the caller)."""
    text = _text_field(body, "input")
    voice_value = body.get("voice")
    if isinstance(voice_value, dict):
        raise AudioFormatError("custom voices are not available locally", param="voice")
    voice = _text_field(body, "voice")
    response_format = _text_field(body, "response_format", "mp3")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise InvalidRequest("speed must be a number", param="speed")
    # `instructions` (tone of voice, for gpt-4o-mini-tts) is accepted: the local voice cannot
    # follow it, as tts-1 cannot. A stream of SSE events is not offered (nor by tts-1).
    stream_format = body.get("stream_format", "audio")
    if stream_format != "audio":
        raise InvalidRequest(
            "stream_format must be 'audio' for the local voice (sse is not supported)",
            param="stream_format",
        )
    validate_speech_request(text, voice, float(speed), response_format)
    return SpeechRequest(text, voice, response_format, float(speed))


def _streamed_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header of unknown length (both sizes 0xFFFFFFFF), as streamed WAV is
    sent: players and libsndfile read to the end of the data."""
    unknown = 0xFFFFFFFF
    byte_rate = sample_rate * 2
    return (
        b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
        + b"data" + struct.pack("<I", unknown)
    )  # fmt: skip


def _pcm16(samples: Samples) -> bytes:
    from sluice.local_audio.codecs import encode

    return encode(samples, SAMPLE_RATE, "pcm")


def _first_audible(sentences: Iterator[Samples]) -> Samples | None:
    """The first sentence with any samples (a sentence of symbols alone may have none)."""
    return next((samples for samples in sentences if len(samples)), None)


def _nothing_to_say() -> AudioFormatError:
    return AudioFormatError(
        "input has nothing the local voice can pronounce (it speaks English)", param="input"
    )


async def _stream_speech(
    header: bytes, first: Samples, sentences: Iterator[Samples]
) -> AsyncIterator[bytes]:
    try:
        yield header + _pcm16(first)
        async for samples in iterate_in_threadpool(sentences):
            if len(samples):
                yield _pcm16(samples)
    finally:
        # Not running: iterate_in_threadpool waits for the sentence in progress.
        close = getattr(sentences, "close", None)
        if close is not None:
            close()


async def _json_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_JSON_BYTES:
        raise PayloadTooLarge(f"The request body exceeds the limit of {_MAX_JSON_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_JSON_BYTES:
            raise PayloadTooLarge(f"The request body exceeds the limit of {_MAX_JSON_BYTES} bytes.")
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def _speech(request: Request) -> Response:
    engines: AudioEngines = request.app.state.engines
    body = await _json_body(request)
    engine = _engine(engines.speech, body.get("model"), LOCAL_SPEECH_MODEL)
    speech = _speech_request(body)
    media_type = content_type(speech.response_format)
    if speech.response_format in _STREAMED_FORMATS:
        sentences = engine.stream_samples(speech.text, speed=speech.speed)
        first = await run_in_threadpool(_first_audible, sentences)
        if first is None:
            raise _nothing_to_say()
        header = _streamed_wav_header(SAMPLE_RATE) if speech.response_format == "wav" else b""
        return StreamingResponse(_stream_speech(header, first, sentences), media_type=media_type)
    whole = await run_in_threadpool(
        lambda: engine.synthesize(
            speech.text,
            voice=speech.voice,
            speed=speech.speed,
            response_format=speech.response_format,
        )
    )
    return Response(whole.audio, media_type=whole.content_type)


async def _form(request: Request) -> SpooledForm:
    try:
        return await read_multipart(request, MAX_UPLOAD_BYTES + _FORM_OVERHEAD_BYTES)
    except PayloadTooLarge:
        raise _file_too_large() from None


def _file_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The audio file exceeds the maximum of {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
        param="file",
    )


def _upload(form: SpooledForm) -> UploadFile:
    upload = form.file("file")
    if upload is None:
        raise InvalidRequest("you must provide a file parameter (an audio file)", param="file")
    if (upload.size or 0) > MAX_UPLOAD_BYTES:
        raise _file_too_large()
    return upload


def _optional_text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be given once, as text", param=name)
    return value


def _check_granularities(fields: Mapping[str, Any]) -> None:
    granularities = fields.get("timestamp_granularities[]", [])
    if isinstance(granularities, str):
        granularities = [granularities]
    if "word" in granularities:
        raise AudioFormatError(
            "word timestamps are not available from the local recogniser; use segment",
            param="timestamp_granularities",
        )


async def _recognise(request: Request, task: Task) -> Response:
    engines: AudioEngines = request.app.state.engines
    form = await _form(request)
    try:
        fields = form.fields()
        engine = _engine(engines.transcription, fields.get("model"), LOCAL_TRANSCRIPTION_MODEL)
        upload = _upload(form)
        response_format = _optional_text(fields, "response_format") or "json"
        check_transcription_format(response_format)
        # Translations are into English and name no language; the recogniser hears English.
        language = _optional_text(fields, "language") if task == "transcribe" else None
        check_transcription_request(language)
        prompt = _optional_text(fields, "prompt")
        _check_granularities(fields)
        # `temperature` is accepted and decoding stays greedy; `stream` is ignored, as
        # whisper-1 ignores it.
        await upload.seek(0)
        audio = await upload.read()
    finally:
        await form.close()
    transcript = await run_in_threadpool(
        lambda: engine.transcribe(audio, language=language, prompt=prompt)
    )
    content, media_type = transcription_body(transcript, response_format, task)
    return Response(content, media_type=media_type)


async def _transcriptions(request: Request) -> Response:
    return await _recognise(request, "transcribe")


async def _translations(request: Request) -> Response:
    return await _recognise(request, "translate")


async def _models(request: Request) -> Response:
    engines: AudioEngines = request.app.state.engines
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "sluice"}
        for model in engines.models()
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)


async def _health(request: Request) -> Response:
    engines: AudioEngines = request.app.state.engines
    body = {"status": "ok", "models": engines.models()}
    return Response(orjson.dumps(body), media_type=_JSON)


def _error_response(error: SluiceError) -> Response:
    return Response(
        error.to_json(), status_code=error.http_status, media_type=_JSON, headers=error.headers
    )


async def _on_sluice_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluiceError)
    return _error_response(exc)


async def _on_audio_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AudioFormatError)
    return _error_response(InvalidRequest(str(exc), param=exc.param))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _error_response(MethodNotAllowed(f"{request.method} is not allowed here."))
    return _error_response(NotFound(f"No route {request.url.path} on the local audio server."))


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("local audio request failed")
    return _error_response(InternalError("The local audio engine failed on this request."))


async def _watch_parent(parent_pid: int) -> None:
    """Stop when the process that started this one is gone (a gateway killed without its
    clean-up would otherwise leave the engines running)."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("parent process %d is gone; stopping", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(engines: AudioEngines, *, parent_pid: int | None = None) -> Starlette:
    """The server; its engines load before it accepts connections (uvicorn runs the lifespan
    first), so ``/health`` answering means the first request is not kept waiting."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(engines.load)
        watch = None if parent_pid is None else asyncio.create_task(_watch_parent(parent_pid))
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()

    app = Starlette(
        routes=[
            Route("/v1/audio/speech", _speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", _transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", _translations, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/health", _health, methods=["GET"]),
        ],
        exception_handlers={
            SluiceError: _on_sluice_error,
            AudioFormatError: _on_audio_error,
            HTTPException: _on_http_error,
            Exception: _on_crash,
        },
        lifespan=lifespan,
    )
    app.state.engines = engines
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.local_audio.server",
        description="Sluice's offline speech and transcription server (loopback only).",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="cores each engine uses")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    args = parser.parse_args(argv)
    engines = AudioEngines.installed(max(1, args.threads))
    if not engines.models():
        print(
            "sluice.local_audio.server: no local audio engine is installed "
            "(pip install 'sluice[local]')",
            flush=True,
        )
        return 2
    import uvicorn

    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; a no-op
    # handler here turns that into a normal return, so a clean stop exits with 0.
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, lambda *_: None)
    uvicorn.run(
        create_app(engines, parent_pid=args.parent_pid),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
