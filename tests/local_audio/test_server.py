"""The local audio server as the process ``sluice serve`` starts, driven by the official OpenAI
SDK: speech streamed as it is synthesised, transcribed back, every response format, and
OpenAI-shaped refusals.

The engines are the real models from their PyPI wheels (the ``local`` extra); without them
these tests skip (and fail under CI=true).
"""

from __future__ import annotations

import http.client
import io
import math
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from sluice.local_audio.asr import transcription_available
from sluice.local_audio.child import LocalAudioServer
from sluice.local_audio.server import MAX_UPLOAD_BYTES
from sluice.local_audio.tts import SAMPLE_RATE, speech_available
from tests.conftest import skip_unless_ci
from tests.local_audio.conftest import share_of_words_recognised, words
from tests.openapi_schema import validate_openai

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog."
STORY = " ".join(
    [
        "Seven purple lamps glow above the quiet harbour.",
        "A fisherman counts his nets before the tide turns.",
        "Gulls circle the mast and call to one another.",
        "The baker opens her shop as the sun comes up.",
        "Children run along the sea wall on their way to school.",
        "A bell rings twice from the church on the hill.",
        "Boats leave the harbour one after another.",
        "By noon the square is full of market stalls.",
    ]
)
MIN_SECONDS_PER_WORD, MAX_SECONDS_PER_WORD = 0.15, 0.7
SPEECH_MODEL, TRANSCRIPTION_MODEL = "hibari", "whisper-tiny.en"


@pytest.fixture(scope="module")
def audio_server() -> Iterator[LocalAudioServer]:
    if not (speech_available() and transcription_available()):
        skip_unless_ci("the local audio engines (the `local` extra) are not installed")
    server = LocalAudioServer()
    server.start()
    yield server
    server.stop()
    assert server.process is not None and server.process.returncode == 0


@pytest.fixture(scope="module")
def client(audio_server: LocalAudioServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=audio_server.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def spoken_wav(client: OpenAI) -> bytes:
    """SENTENCE spoken, as the streamed WAV the server sends."""
    return client.audio.speech.create(
        model=SPEECH_MODEL, voice="alloy", input=SENTENCE, response_format="wav"
    ).read()


def plausible_duration(seconds: float, text: str) -> bool:
    count = len(words(text))
    return count * MIN_SECONDS_PER_WORD <= seconds <= count * MAX_SECONDS_PER_WORD


def wav_samples(data: bytes) -> tuple[int, int]:
    """(sample rate, frames) as libsndfile reads them, and checks of the streamed header."""
    import soundfile

    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    channels, rate, _, _, bits = struct.unpack("<HIIHH", data[22:36])
    assert (channels, rate, bits) == (1, SAMPLE_RATE, 16)
    assert data[36:40] == b"data" and (len(data) - 44) % 2 == 0
    with soundfile.SoundFile(io.BytesIO(data)) as reader:
        assert reader.channels == 1
        return int(reader.samplerate), int(reader.frames)


def test_health_and_models(audio_server: LocalAudioServer, client: OpenAI) -> None:
    health = httpx.get(audio_server.base_url.removesuffix("/v1") + "/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models": [SPEECH_MODEL, TRANSCRIPTION_MODEL]}
    assert [model.id for model in client.models.list()] == [SPEECH_MODEL, TRANSCRIPTION_MODEL]


def test_speech_is_a_wav_streamed_as_each_sentence_is_ready(client: OpenAI) -> None:
    arrivals: list[tuple[float, int]] = []
    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(
        model=SPEECH_MODEL, voice="alloy", input=STORY, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert "content-length" not in response.headers  # sent as it is made
        data = b""
        for chunk in response.iter_bytes():
            arrivals.append((time.monotonic(), len(chunk)))
            data += chunk
    ended = time.monotonic()
    rate, frames = wav_samples(data)
    assert frames == (len(data) - 44) // 2 and plausible_duration(frames / rate, STORY)
    # Eight sentences are synthesised one after another; the first is sent as soon as it is
    # ready, long before the last (a reply sent whole would arrive at the very end).
    first_arrival, first_size = arrivals[0]
    assert len(arrivals) > 1 and first_size < len(data)
    assert first_arrival - started < 0.5 * (ended - started), arrivals


def test_a_short_request_is_not_kept_waiting_by_a_long_one(
    audio_server: LocalAudioServer,
) -> None:
    """Synthesis runs in worker threads, the engine taken a sentence at a time in turn: a short
    request is answered while a long one is still being spoken."""
    long_text = " ".join(f"This is sentence number {n} of a long story." for n in range(40))
    finished: dict[str, float] = {}
    speech_url = f"{audio_server.base_url}/audio/speech"

    def long_request() -> None:
        body = {
            "model": SPEECH_MODEL,
            "voice": "alloy",
            "input": long_text,
            "response_format": "pcm",
        }
        assert httpx.post(speech_url, json=body, timeout=120).status_code == 200
        finished["long"] = time.monotonic()

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(0.3)
    body = {
        "model": SPEECH_MODEL,
        "voice": "alloy",
        "input": "Short one.",
        "response_format": "mp3",
    }
    short = httpx.post(speech_url, json=body, timeout=120)
    finished["short"] = time.monotonic()
    worker.join(timeout=120)
    assert short.status_code == 200 and short.headers["content-type"] == "audio/mpeg"
    assert finished["short"] < finished["long"]


def test_pcm_is_streamed_raw_samples(client: OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model=SPEECH_MODEL, voice="nova", input=SENTENCE, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        data = response.read()
    assert len(data) % 2 == 0 and plausible_duration(len(data) / 2 / SAMPLE_RATE, SENTENCE)
    pcm = np.frombuffer(data, dtype="<i2") / 32768.0
    assert 0.01 < float(np.sqrt(np.mean(pcm**2))) < 0.5  # speech, not silence


@pytest.mark.parametrize(
    ("response_format", "content_type", "container"),
    [("mp3", "audio/mpeg", "MP3"), ("opus", "audio/opus", "OGG"), ("flac", "audio/flac", "FLAC")],
)
def test_encoded_formats_are_whole_files(
    client: OpenAI, response_format: Any, content_type: str, container: str
) -> None:
    import soundfile

    reply = client.audio.speech.with_raw_response.create(
        model=SPEECH_MODEL, voice="echo", input=SENTENCE, response_format=response_format
    )
    assert reply.headers["content-type"] == content_type
    assert int(reply.headers["content-length"]) == len(reply.content)
    with soundfile.SoundFile(io.BytesIO(reply.content)) as reader:
        assert reader.format == container
        assert plausible_duration(reader.frames / reader.samplerate, SENTENCE)


def test_speech_is_transcribed_back(client: OpenAI, spoken_wav: bytes) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        model=TRANSCRIPTION_MODEL, file=("speech.wav", spoken_wav, "audio/wav")
    )
    body = raw.http_response.json()
    validate_openai("CreateTranscriptionResponseJson", body)
    transcript = raw.parse()
    assert share_of_words_recognised(SENTENCE, transcript.text) >= 0.6, transcript.text
    _, frames = wav_samples(spoken_wav)
    assert body["usage"] == {"type": "duration", "seconds": math.ceil(frames / SAMPLE_RATE)}


def test_verbose_json_transcription_and_translation(client: OpenAI, spoken_wav: bytes) -> None:
    transcribed = client.audio.transcriptions.with_raw_response.create(
        model=TRANSCRIPTION_MODEL,
        file=("speech.wav", spoken_wav),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
        language="en",
    ).http_response.json()
    validate_openai("CreateTranscriptionResponseVerboseJson", transcribed)
    _, frames = wav_samples(spoken_wav)
    assert transcribed["task"] == "transcribe" and transcribed["language"] == "english"
    assert transcribed["duration"] == pytest.approx(frames / SAMPLE_RATE)
    assert transcribed["segments"]
    assert share_of_words_recognised(SENTENCE, transcribed["text"]) >= 0.6

    # The SDK marks translations deprecated (OpenAI's endpoint and whisper-1 are); it still
    # sends them, and clients still do.
    with pytest.deprecated_call():
        translated = client.audio.translations.with_raw_response.create(
            model=TRANSCRIPTION_MODEL,
            file=("speech.wav", spoken_wav),
            response_format="verbose_json",
        ).http_response.json()
    validate_openai("CreateTranslationResponseVerboseJson", translated)
    assert translated["task"] == "translate" and translated["text"] == transcribed["text"]
    with pytest.deprecated_call():
        plain = client.audio.translations.create(
            model=TRANSCRIPTION_MODEL, file=("speech.wav", spoken_wav)
        )
    assert plain.text == transcribed["text"]


@pytest.mark.parametrize(
    ("response_format", "content_type"),
    [("text", "text/plain"), ("srt", "text/plain"), ("vtt", "text/vtt")],
)
def test_text_formats(
    audio_server: LocalAudioServer, spoken_wav: bytes, response_format: str, content_type: str
) -> None:
    for path in ("transcriptions", "translations"):
        reply = httpx.post(
            f"{audio_server.base_url}/audio/{path}",
            data={"model": TRANSCRIPTION_MODEL, "response_format": response_format},
            files={"file": ("speech.wav", spoken_wav, "audio/wav")},
            timeout=60,
        )
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith(content_type)
        text = reply.text
        assert share_of_words_recognised(SENTENCE, text) >= 0.6, text
        if response_format == "srt":
            assert text.startswith("1\n00:00:0") and " --> 00:00:0" in text
        elif response_format == "vtt":
            assert text.startswith("WEBVTT\n\n00:00:0")
        else:
            assert text.endswith("\n") and "-->" not in text


def assert_refused(error: openai.APIStatusError, status: int, param: str | None) -> str:
    body = error.response.json()
    assert error.status_code == status and set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param and body["error"]["message"]
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "   "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"input": "🙂🙂"}, "input"),  # nothing the voice can pronounce
        ({"voice": "robot"}, "voice"),
        ({"speed": 9.0}, "speed"),
        ({"response_format": "aac"}, "response_format"),
        ({"stream_format": "sse"}, "stream_format"),
    ],
)
def test_bad_speech_requests_are_openai_shaped_400s(
    client: OpenAI, fields: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {
        "model": SPEECH_MODEL,
        "voice": "alloy",
        "input": SENTENCE,
        "response_format": "wav",
        **fields,
    }
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(**request)
    assert_refused(refused.value, 400, param)


def test_unknown_model_is_a_404(client: OpenAI, spoken_wav: bytes) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE)
    assert "tts-1" in assert_refused(refused.value, 404, "model")
    assert refused.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as refused:
        client.audio.transcriptions.create(model=SPEECH_MODEL, file=("a.wav", spoken_wav))
    assert refused.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("fields", "file", "param"),
    [
        ({"language": "fr"}, None, "language"),
        ({"response_format": "diarized_json"}, None, "response_format"),
        ({"timestamp_granularities": ["word"]}, None, "timestamp_granularities"),
        ({}, ("notes.txt", b"this is not audio at all", "text/plain"), "file"),
        ({}, ("empty.wav", b"", "audio/wav"), "file"),
    ],
)
def test_bad_transcription_requests_are_openai_shaped_400s(
    client: OpenAI,
    spoken_wav: bytes,
    fields: dict[str, Any],
    file: tuple[str, bytes, str] | None,
    param: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            model=TRANSCRIPTION_MODEL, file=file or ("speech.wav", spoken_wav), **fields
        )
    assert_refused(refused.value, 400, param)


def test_a_request_without_model_file_or_json_is_a_400(audio_server: LocalAudioServer) -> None:
    base = audio_server.base_url
    cases = [
        httpx.post(f"{base}/audio/speech", json={"voice": "alloy", "input": "hi"}),
        httpx.post(f"{base}/audio/speech", content=b"{not json", headers={"content-type": "x"}),
        httpx.post(
            f"{base}/audio/transcriptions",
            files={"model": (None, TRANSCRIPTION_MODEL), "prompt": (None, "no file")},
        ),
        httpx.post(f"{base}/audio/transcriptions", files={"file": ("a.wav", b"RIFF")}),
    ]
    params = [response.json()["error"]["param"] for response in cases]
    assert [response.status_code for response in cases] == [400] * 4
    assert params == ["model", None, "file", "model"]
    not_a_form = httpx.post(f"{base}/audio/transcriptions", data={"model": TRANSCRIPTION_MODEL})
    assert not_a_form.status_code == 415
    assert not_a_form.json()["error"]["code"] == "unsupported_media_type"


def test_a_file_over_25_mb_is_a_413(client: OpenAI) -> None:
    oversized = b"\0" * (MAX_UPLOAD_BYTES + 1)
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model=TRANSCRIPTION_MODEL, file=("big.wav", oversized))
    assert "25 MB" in assert_refused(refused.value, 413, "file")


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(
    audio_server: LocalAudioServer,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", audio_server.port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/audio/transcriptions")
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(100 * 1024 * 1024))
        connection.endheaders()  # and no body: the answer must not wait for one
        response = connection.getresponse()
        assert response.status == 413
        assert b'"param":"file"' in response.read()
    finally:
        connection.close()


def test_unknown_route_and_method_are_openai_shaped(audio_server: LocalAudioServer) -> None:
    missing = httpx.post(f"{audio_server.base_url}/chat/completions", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(f"{audio_server.base_url}/audio/speech")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
