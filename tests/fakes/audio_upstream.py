"""A fake OpenAI audio API: speech, transcriptions and translations on the real wire formats.

Speech answers real audio (WAV written by the stdlib ``wave`` module, MPEG frames, raw PCM), in
several writes, or ``speech.audio.*`` SSE events. Uploads are parsed with aiohttp's multipart
reader, the file read in chunks and hashed (never held whole), and a WAV upload decoded with
``wave`` to report its duration as OpenAI would. Azure's deployment paths are served too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import wave
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from tests.fakes.server import serve_on_loopback

__all__ = ["FakeAudio", "ReceivedForm", "flac_bytes", "mp3_bytes", "wav_bytes", "TRANSCRIPT"]

TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
_WORDS = TRANSCRIPT.split()
_SPEECH_TOKENS_PER_CHAR = 3  # output (audio) tokens the fake reports per input character


def wav_bytes(seconds: float, rate: int = 16_000, tone_hz: int = 440) -> bytes:
    """A mono 16-bit WAV file holding a sine tone of ``seconds``."""
    # A whole number of cycles a second: one second of samples, repeated.
    second = b"".join(
        int(8000 * math.sin(2 * math.pi * tone_hz * n / rate)).to_bytes(2, "little", signed=True)
        for n in range(rate)
    )
    whole, part = divmod(round(seconds * rate), rate)
    frames = second * whole + second[: 2 * part]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def mp3_bytes(seconds: float) -> bytes:
    """Constant-bitrate MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, mono, silent): a valid
    MP3 stream that decoders and mutagen read as ``seconds`` long (1152 samples a frame)."""
    header = bytes([0xFF, 0xFB, 0x90, 0xC4])  # sync, MPEG-1 L3 no CRC, 128k, 44.1k, mono
    frame = header + bytes(144 * 128_000 // 44_100 - len(header))
    return frame * math.ceil(seconds * 44_100 / 1152)


def flac_bytes(seconds: float, rate: int = 16_000) -> bytes:
    """A FLAC stream header (``fLaC`` and its STREAMINFO block) announcing ``seconds`` of mono
    16-bit audio, with no frames: what a FLAC file's duration is read from."""
    packed = (rate << 44) | (0 << 41) | (15 << 36) | round(seconds * rate)
    info = (4096).to_bytes(2, "big") * 2 + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def _wav_seconds(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as audio:
            frames: int = audio.getnframes()
            rate: int = audio.getframerate()
            return frames / rate
    except (wave.Error, EOFError):
        return None


@dataclass
class ReceivedForm:
    fields: dict[str, list[str]]
    filename: str | None
    file_size: int
    file_sha256: str
    content_length: int | None
    path: str
    headers: dict[str, str]


@dataclass
class FakeAudio:
    fail_with: int | None = None  # answer this status (an OpenAI error) instead
    # speech: after the first write, wait for ``release()`` before sending the rest
    hold_after_first: bool = False
    # transcription: the duration reported, instead of the WAV's own (None: the WAV's)
    reported_seconds: float | None = None
    speech_seconds: float = 1.0  # length of the audio speech answers
    speeches: list[dict[str, Any]] = field(default_factory=list)
    forms: list[ReceivedForm] = field(default_factory=list)
    finished: int = 0  # answers written to their end
    port: int = 0
    _runner: web.AppRunner | None = None
    _gate: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeAudio:
        self._gate = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/v1", "/openai/deployments/{deployment}"):
            app.router.add_post(prefix + "/audio/speech", self._speech)
            app.router.add_post(prefix + "/audio/transcriptions", self._transcribe)
            app.router.add_post(prefix + "/audio/translations", self._transcribe)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def release(self) -> None:
        assert self._gate is not None
        self._gate.set()

    def _error(self) -> web.Response:
        body = {"error": {"message": "busy", "type": "server_error", "param": None,
                          "code": None}}  # fmt: skip
        return web.json_response(body, status=self.fail_with or 500)

    # --- speech ---------------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert isinstance(body, dict)
        self.speeches.append({**body, "_path": request.path, "_headers": dict(request.headers)})
        if self.fail_with is not None:
            return self._error()
        for name in ("model", "input", "voice"):
            if name not in body:
                return web.json_response({"error": {"message": f"{name} missing"}}, status=400)
        if body.get("stream_format") == "sse":
            return await self._speech_events(request, body)
        audio, media = self._rendered(str(body.get("response_format", "mp3")))
        response = web.StreamResponse(headers={"content-type": media})
        await response.prepare(request)
        first, rest = audio[:1024], audio[1024:]
        await response.write(first)
        if self.hold_after_first:
            assert self._gate is not None
            await self._gate.wait()
        for at in range(0, len(rest), 8192):
            await response.write(rest[at : at + 8192])
            await asyncio.sleep(0)
        await response.write_eof()
        self.finished += 1
        return response

    def _rendered(self, response_format: str) -> tuple[bytes, str]:
        if response_format == "wav":
            return wav_bytes(self.speech_seconds, rate=24_000), "audio/wav"
        if response_format == "pcm":
            samples = wav_bytes(self.speech_seconds, rate=24_000)[44:]
            return samples, "audio/pcm"
        return mp3_bytes(self.speech_seconds), "audio/mpeg"

    async def _speech_events(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        audio = wav_bytes(self.speech_seconds, rate=24_000)[44:]  # pcm, as OpenAI streams it
        for at in range(0, len(audio), 4800):
            chunk = base64.b64encode(audio[at : at + 4800]).decode()
            event = orjson.dumps({"type": "speech.audio.delta", "audio": chunk})
            await response.write(b"event: speech.audio.delta\ndata: " + event + b"\n\n")
        text = str(body["input"])
        usage = {"input_tokens": len(text) // 4 + 1,
                 "output_tokens": _SPEECH_TOKENS_PER_CHAR * len(text)}  # fmt: skip
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        done = {"type": "speech.audio.done", "usage": usage}
        await response.write(b"event: speech.audio.done\ndata: " + orjson.dumps(done) + b"\n\n")
        await response.write_eof()
        self.finished += 1
        return response

    # --- transcriptions and translations ------------------------------------------------------

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        fields: dict[str, list[str]] = {}
        filename, size, digest, head = None, 0, hashlib.sha256(), bytearray()
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.filename is None:
                fields.setdefault(part.name or "", []).append(await part.text())
                continue
            filename = part.filename
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                digest.update(chunk)
                if len(head) < 4 * 1024 * 1024:  # enough of a test WAV to read its length
                    head += chunk[: 4 * 1024 * 1024 - len(head)]
        headers = dict(request.headers)
        received = ReceivedForm(fields, filename, size, digest.hexdigest(),
                                request.content_length, request.path, headers)  # fmt: skip
        self.forms.append(received)
        if self.fail_with is not None:
            return self._error()
        if filename is None or "model" not in fields:
            message = "file missing" if filename is None else "model missing"
            return web.json_response({"error": {"message": message}}, status=400)
        model = fields["model"][0]
        seconds = self.reported_seconds
        if seconds is None:
            seconds = _wav_seconds(bytes(head)) if size <= len(head) else None
        seconds = 2.0 if seconds is None else seconds
        response_format = fields.get("response_format", ["json"])[0]
        tokens = "transcribe" in model  # gpt-4o-transcribe and friends report token usage
        if fields.get("stream", ["false"])[0] == "true" and tokens:
            return await self._transcript_events(request, seconds)
        return self._transcript(response_format, seconds, tokens, fields, request.path)

    def _transcript(
        self,
        response_format: str,
        seconds: float,
        tokens: bool,
        fields: dict[str, list[str]],
        path: str,
    ) -> web.Response:
        self.finished += 1
        if response_format == "text":
            return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain")
        cues = [(i * seconds / 2, (i + 1) * seconds / 2, half) for i, half in
                enumerate((" ".join(_WORDS[:4]), " ".join(_WORDS[4:])))]  # fmt: skip
        if response_format == "srt":
            blocks = [f"{i + 1}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n"
                      for i, (a, b, text) in enumerate(cues)]  # fmt: skip
            return web.Response(text="\n".join(blocks), content_type="application/x-subrip")
        if response_format == "vtt":
            blocks = [f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n" for a, b, text in cues]
            return web.Response(text="WEBVTT\n\n" + "\n".join(blocks), content_type="text/vtt")
        usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(seconds)}
        if tokens:
            usage = _token_usage(20 * math.ceil(seconds), 12)
        answer: dict[str, Any] = {"text": TRANSCRIPT, "usage": usage}
        if response_format == "verbose_json":
            translating = path.endswith("/translations")
            answer = {
                "task": "translate" if translating else "transcribe",
                "language": "english",
                "duration": seconds,
                "text": TRANSCRIPT,
                "segments": [_segment(i, a, b, text) for i, (a, b, text) in enumerate(cues)],
            }
            if "word" in fields.get("timestamp_granularities[]", []):
                step = seconds / len(_WORDS)
                answer["words"] = [{"word": w, "start": i * step, "end": (i + 1) * step}
                                   for i, w in enumerate(_WORDS)]  # fmt: skip
            if not translating:
                answer["usage"] = usage
        return web.json_response(answer)

    async def _transcript_events(self, request: web.Request, seconds: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for word in _WORDS:
            delta = {"type": "transcript.text.delta", "delta": word + " "}
            await response.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            await asyncio.sleep(0)
        usage = _token_usage(20 * math.ceil(seconds), len(_WORDS))
        done = {"type": "transcript.text.done", "text": TRANSCRIPT, "usage": usage}
        await response.write(b"data: " + orjson.dumps(done) + b"\n\n")
        await response.write_eof()
        self.finished += 1
        return response


def _token_usage(audio_tokens: int, output_tokens: int) -> dict[str, Any]:
    total = audio_tokens + output_tokens
    return {"type": "tokens", "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output_tokens, "total_tokens": total}  # fmt: skip


def _clock(seconds: float, comma: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{comma}{rest % 1000:03d}"


def _segment(index: int, start: float, end: float, text: str) -> dict[str, Any]:
    return {"id": index, "seek": 0, "start": start, "end": end, "text": " " + text,
            "tokens": [50364 + index], "temperature": 0.0, "avg_logprob": -0.2,
            "compression_ratio": 1.2, "no_speech_prob": 0.01}  # fmt: skip
