"""The audio family through the official SDK: speech relayed as it arrives (bytes or SSE
events), transcriptions and translations in every response format, each metered in its unit
(characters, seconds measured from the upload, the upstream's own figure, reported tokens),
budgeted before the upstream is called, and refused with OpenAI-shaped errors when wrong."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import warnings
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import pytest
from openai import BadRequestError, OpenAI, RateLimitError

from tests.conftest import GatewayFactory
from tests.fakes.audio_upstream import TRANSCRIPT, FakeAudio, flac_bytes, mp3_bytes, wav_bytes
from tests.openapi_schema import validate_openai
from tests.support import Gateway, LoopThread

SECRET = "sk-audio-upstream-SECRET-123456"
MODELS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "whisper-1", "gpt-4o-transcribe"]
# Shipped list prices (src/sluice/metering/data/prices.yaml), in micro-dollars.
TTS_1_PER_CHAR = 15  # $15 per 1M characters
WHISPER_PER_SECOND = 100  # $0.0001 a second
SPEECH = "Sluice relays speech as it arrives, and bills it by the character."
CLIP_SECONDS = 2.5  # a WAV upload: billed as 3 seconds (a started second counts whole)

Sdk = Callable[..., OpenAI]


@pytest.fixture
def fakes(loop_thread: LoopThread) -> Iterator[list[FakeAudio]]:
    started = [loop_thread.run(FakeAudio().start()) for _ in range(2)]
    yield started
    for fake in started:
        loop_thread.run(fake.release())
        loop_thread.run(fake.stop())


def _channel(name: str, fake: FakeAudio, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai", "base_url": fake.base_url, "api_key": SECRET,
            "models": MODELS, "model_map": {"my-whisper": "whisper-1"}, **extra}  # fmt: skip


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, fakes: list[FakeAudio]) -> Gateway:
    return gateway_factory([_channel("audio", fakes[0])])


def _key(gateway: Gateway, budget_micro: int = 10_000_000) -> str:
    return gateway.create_key("audio", budget_micro=budget_micro)


def _row(gateway: Gateway, key: str) -> dict[str, Any]:
    [row] = gateway.usage_rows(key)
    return row


WAV_CLIP = wav_bytes(CLIP_SECONDS)


# --- speech ------------------------------------------------------------------------------------


def test_speech_streams_to_a_file_through_the_sdk_billed_per_character(
    gateway: Gateway, fakes: list[FakeAudio], sdk: Sdk, tmp_path: Path
) -> None:
    key = _key(gateway)
    target = tmp_path / "speech.wav"
    with sdk(gateway, key).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=SPEECH, response_format="wav", speed=1.25
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        response.stream_to_file(target)
    with wave.open(str(target)) as audio:  # a whole, valid WAV file
        assert audio.getnframes() / audio.getframerate() == pytest.approx(fakes[0].speech_seconds)
    [sent] = fakes[0].speeches
    assert (sent["input"], sent["voice"], sent["speed"]) == (SPEECH, "alloy", 1.25)
    assert sent["_headers"]["Authorization"] == f"Bearer {SECRET}"
    row = _row(gateway, key)
    assert (row["endpoint"], row["status"], row["characters"]) == ("speech", 200, len(SPEECH))
    assert row["cost_micro"] == len(SPEECH) * TTS_1_PER_CHAR
    assert (row["prompt_tokens"], row["completion_tokens"], row["audio_seconds"]) == (0, 0, 0)
    assert gateway.key_record(key).spent_micro == row["cost_micro"]


def test_speech_reaches_the_client_before_the_upstream_has_finished(
    gateway: Gateway, fakes: list[FakeAudio], loop_thread: LoopThread
) -> None:
    fake = fakes[0]
    fake.hold_after_first = True  # the fake sends 1 KiB, then waits to be released
    key = _key(gateway)
    body = {"model": "tts-1-hd", "voice": "nova", "input": SPEECH, "response_format": "mp3"}
    received = bytearray()
    with httpx.stream("POST", f"{gateway.base_url}/audio/speech", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"}) as response:  # fmt: skip
        assert response.status_code == 200
        chunks = response.iter_raw()
        received += next(chunks)
        # The first bytes are here while the upstream is still blocked mid-answer.
        assert received == mp3_bytes(fake.speech_seconds)[: len(received)]
        assert fake.finished == 0
        loop_thread.run(fake.release())
        for chunk in chunks:
            received += chunk
    assert bytes(received) == mp3_bytes(fake.speech_seconds) and fake.finished == 1
    assert _row(gateway, key)["cost_micro"] == len(SPEECH) * 2 * TTS_1_PER_CHAR  # tts-1-hd


def test_speech_sse_events_are_relayed_and_billed_by_reported_tokens(
    gateway: Gateway, fakes: list[FakeAudio], sdk: Sdk
) -> None:
    key = _key(gateway)
    events: list[dict[str, Any]] = []
    with sdk(gateway, key).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input=SPEECH, instructions="Cheerful.",
        stream_format="sse", response_format="pcm",
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    for event in deltas:
        validate_openai("SpeechAudioDeltaEvent", event)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert pcm == wav_bytes(fakes[0].speech_seconds, rate=24_000)[44:]
    done = events[-1]
    validate_openai("SpeechAudioDoneEvent", done)
    usage = done["usage"]
    assert fakes[0].speeches[0]["instructions"] == "Cheerful."
    row = _row(gateway, key)
    assert (row["status"], row["stream"]) == (200, True)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage["input_tokens"], usage["output_tokens"])  # fmt: skip
    # gpt-4o-mini-tts: $0.60 per 1M input tokens, $12 per 1M output (audio) tokens.
    expected = math.floor(usage["input_tokens"] * 0.6 + usage["output_tokens"] * 12 + 0.5)
    assert row["cost_micro"] == expected and row["characters"] == 0


# --- transcriptions ----------------------------------------------------------------------------


def _transcribe(client: OpenAI, **options: Any) -> Any:
    options.setdefault("model", "whisper-1")
    options.setdefault("file", ("clip.wav", WAV_CLIP, "audio/wav"))
    return client.audio.transcriptions.create(**options)


def test_transcription_json_is_billed_the_upstreams_seconds(
    gateway: Gateway, fakes: list[FakeAudio], sdk: Sdk
) -> None:
    key = _key(gateway)
    result = _transcribe(sdk(gateway, key), model="my-whisper", language="en",
                         prompt="Foxes.", temperature=0.2)  # fmt: skip
    assert result.text == TRANSCRIPT
    validate_openai("CreateTranscriptionResponseJson", result.model_dump(exclude_unset=True))
    [form] = fakes[0].forms
    assert form.fields["model"] == ["whisper-1"]  # mapped, in the re-encoded form
    assert (form.fields["language"], form.fields["prompt"]) == (["en"], ["Foxes."])
    assert form.fields["temperature"] == ["0.2"]
    assert form.file_sha256 == hashlib.sha256(WAV_CLIP).hexdigest()
    assert form.filename == "clip.wav" and form.content_length is not None
    row = _row(gateway, key)
    assert (row["endpoint"], row["audio_seconds"]) == ("transcriptions", 3)
    assert row["cost_micro"] == 3 * WHISPER_PER_SECOND


@pytest.mark.parametrize(
    ("response_format", "media", "first_line"),
    [("text", "text/plain", TRANSCRIPT), ("srt", "application/x-subrip", "1"),
     ("vtt", "text/vtt", "WEBVTT")],
)  # fmt: skip
def test_text_and_subtitle_answers_are_relayed_as_sent_and_billed_measured_seconds(
    gateway: Gateway,
    sdk: Sdk,
    response_format: Literal["text", "srt", "vtt"],
    media: str,
    first_line: str,
) -> None:
    key = _key(gateway)
    raw = sdk(gateway, key).audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("clip.wav", WAV_CLIP, "audio/wav"),
        response_format=response_format,
    )  # fmt: skip
    assert raw.headers["content-type"].startswith(media)
    text = raw.parse()
    assert isinstance(text, str) and text.splitlines()[0] == first_line
    if response_format != "text":
        assert "-->" in text and "jumps over the lazy dog." in text
    row = _row(gateway, key)
    # No figure in the answer: the duration measured from the upload (2.5 s -> 3).
    assert (row["audio_seconds"], row["cost_micro"]) == (3, 3 * WHISPER_PER_SECOND)


def test_verbose_json_with_timestamp_granularities(
    gateway: Gateway, fakes: list[FakeAudio], sdk: Sdk
) -> None:
    fakes[0].reported_seconds = 7.2  # the upstream's figure wins over the measured 2.5 s
    key = _key(gateway)
    result = _transcribe(sdk(gateway, key), response_format="verbose_json",
                         timestamp_granularities=["word", "segment"])  # fmt: skip
    answer = result.model_dump(exclude_unset=True)
    validate_openai("CreateTranscriptionResponseVerboseJson", answer)
    assert len(answer["words"]) == len(TRANSCRIPT.split()) and answer["segments"]
    assert fakes[0].forms[0].fields["timestamp_granularities[]"] == ["word", "segment"]
    row = _row(gateway, key)
    assert (row["audio_seconds"], row["cost_micro"]) == (8, 8 * WHISPER_PER_SECOND)


@pytest.mark.parametrize(
    ("name", "clip", "seconds"),
    [("clip.mp3", mp3_bytes(4.2), 5), ("clip.flac", flac_bytes(3.3), 4),
     ("no-extension", mp3_bytes(1.5), 2)],
)  # fmt: skip
def test_mp3_and_flac_uploads_are_measured_from_their_headers(
    gateway: Gateway, sdk: Sdk, name: str, clip: bytes, seconds: int
) -> None:
    key = _key(gateway)
    text = _transcribe(sdk(gateway, key), file=(name, clip, "application/octet-stream"),
                       response_format="text")  # fmt: skip
    assert text.strip() == TRANSCRIPT
    assert _row(gateway, key)["audio_seconds"] == seconds


def test_gpt_4o_transcribe_streams_events_billed_by_reported_tokens(
    gateway: Gateway, sdk: Sdk
) -> None:
    key = _key(gateway)
    stream = _transcribe(sdk(gateway, key), model="gpt-4o-transcribe", stream=True)
    events = [event.model_dump(exclude_unset=True) for event in stream]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert "".join(e["delta"] for e in deltas).strip() == TRANSCRIPT
    done = events[-1]
    validate_openai("TranscriptTextDoneEvent", done)
    usage = done["usage"]
    row = _row(gateway, key)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage["input_tokens"], usage["output_tokens"])  # fmt: skip
    # gpt-4o-transcribe: $6 per 1M input (audio) tokens, $10 per 1M output tokens.
    expected = math.floor(usage["input_tokens"] * 6 + usage["output_tokens"] * 10 + 0.5)
    assert row["cost_micro"] == expected and row["stream"]


def test_gpt_4o_transcribe_json_is_billed_by_tokens_not_seconds(gateway: Gateway, sdk: Sdk) -> None:
    key = _key(gateway)
    result = _transcribe(sdk(gateway, key), model="gpt-4o-transcribe")
    answer = result.model_dump(exclude_unset=True)
    validate_openai("CreateTranscriptionResponseJson", answer)
    usage = answer["usage"]
    row = _row(gateway, key)
    assert row["audio_seconds"] == 0 and row["prompt_tokens"] == usage["input_tokens"]
    assert row["cost_micro"] == math.floor(
        usage["input_tokens"] * 6 + usage["output_tokens"] * 10 + 0.5
    )


def test_a_stream_the_upstream_ignores_is_relayed_whole(gateway: Gateway) -> None:
    # whisper-1 ignores ``stream``: its JSON answer reaches the client as it came, metered.
    key = _key(gateway)
    response = httpx.post(
        f"{gateway.base_url}/audio/transcriptions",
        data={"model": "whisper-1", "stream": "true"},
        files={"file": ("clip.wav", WAV_CLIP, "audio/wav")},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200 and response.json()["text"] == TRANSCRIPT
    assert _row(gateway, key)["audio_seconds"] == 3


# --- translations ------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text"])
def test_translations(
    gateway: Gateway,
    fakes: list[FakeAudio],
    sdk: Sdk,
    response_format: Literal["json", "verbose_json", "text"],
) -> None:
    key = _key(gateway)
    with warnings.catch_warnings():  # the SDK marks translations deprecated; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        result = sdk(gateway, key).audio.translations.create(
            model="whisper-1", file=("clip.wav", WAV_CLIP, "audio/wav"),
            response_format=response_format,
        )  # fmt: skip
    if isinstance(result, str):
        assert response_format == "text" and result.strip() == TRANSCRIPT
    else:
        verbose = response_format == "verbose_json"
        schema = (
            "CreateTranslationResponseVerboseJson" if verbose else "CreateTranslationResponseJson"
        )
        validate_openai(schema, result.model_dump(exclude_unset=True))
    assert fakes[0].forms[0].path == "/v1/audio/translations"
    row = _row(gateway, key)
    assert (row["endpoint"], row["audio_seconds"]) == ("translations", 3)


# --- failover, channels, budgets ---------------------------------------------------------------


def test_a_failed_channel_is_failed_over_with_the_same_upload(
    gateway_factory: GatewayFactory, fakes: list[FakeAudio], sdk: Sdk
) -> None:
    first, second = fakes
    first.fail_with = 503
    gateway = gateway_factory([_channel("busy", first, priority=1), _channel("spare", second)])
    key = _key(gateway)
    assert _transcribe(sdk(gateway, key)).text == TRANSCRIPT
    digest = hashlib.sha256(WAV_CLIP).hexdigest()
    assert [f.file_sha256 for f in (*first.forms, *second.forms)] == [digest, digest]
    assert _row(gateway, key)["channel"] == "spare"


def test_azure_channels_forward_to_deployment_paths(
    gateway_factory: GatewayFactory, fakes: list[FakeAudio], sdk: Sdk, tmp_path: Path
) -> None:
    channel = {"name": "azure", "type": "azure", "base_url": fakes[0].azure_url,
               "api_key": SECRET, "models": MODELS,
               "model_map": {"whisper-1": "my-whisper-deployment"}}  # fmt: skip
    gateway = gateway_factory([channel])
    client = sdk(gateway, _key(gateway))
    assert _transcribe(client).text == TRANSCRIPT
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hi"
    ) as response:
        response.stream_to_file(tmp_path / "hi.mp3")
    [form] = fakes[0].forms
    assert form.path == "/openai/deployments/my-whisper-deployment/audio/transcriptions"
    assert form.headers["api-key"] == SECRET
    assert fakes[0].speeches[0]["_path"] == "/openai/deployments/tts-1/audio/speech"


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_channels_without_audio_refuse_with_unsupported_endpoint(
    gateway_factory: GatewayFactory, sdk: Sdk, kind: str
) -> None:
    channel = {"name": kind, "type": kind, "base_url": "http://127.0.0.1:9",
               "api_key": SECRET, "models": MODELS}  # fmt: skip
    gateway = gateway_factory([channel])
    client = sdk(gateway, _key(gateway))
    with pytest.raises(BadRequestError) as speech:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    with pytest.raises(BadRequestError) as transcription:
        _transcribe(client)
    for caught in (speech, transcription):
        assert caught.value.code == "unsupported_endpoint"
        assert SECRET not in str(caught.value.body)


def test_budgets_refuse_what_the_reservation_does_not_fit(
    gateway: Gateway, fakes: list[FakeAudio], sdk: Sdk
) -> None:
    speech_key = _key(gateway, budget_micro=len(SPEECH) * TTS_1_PER_CHAR - 1)
    with pytest.raises(RateLimitError) as speech:
        sdk(gateway, speech_key).audio.speech.create(model="tts-1", voice="alloy", input=SPEECH)
    # 2.5 s of audio reserves 3 seconds: a budget a micro-dollar short of that refuses it.
    audio_key = _key(gateway, budget_micro=3 * WHISPER_PER_SECOND - 1)
    with pytest.raises(RateLimitError) as transcription:
        _transcribe(sdk(gateway, audio_key))
    for caught in (speech, transcription):
        assert caught.value.code == "insufficient_quota"
    assert fakes[0].speeches == [] and fakes[0].forms == []
    fitting = _key(gateway, budget_micro=3 * WHISPER_PER_SECOND)
    assert _transcribe(sdk(gateway, fitting)).text == TRANSCRIPT


# --- bad input ---------------------------------------------------------------------------------


def _post_form(gateway: Gateway, key: str, data: dict[str, Any], files: Any) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/audio/transcriptions", data=data, files=files,
                      headers={"authorization": f"Bearer {key}"}, timeout=60)  # fmt: skip


def _post_speech(gateway: Gateway, key: str, body: dict[str, Any]) -> httpx.Response:
    payload = {"model": "tts-1", "voice": "alloy", "input": "hi", **body}
    return httpx.post(f"{gateway.base_url}/audio/speech", json=payload,
                      headers={"authorization": f"Bearer {key}"})  # fmt: skip


CLIP_FILE = {"file": ("clip.wav", WAV_CLIP, "audio/wav")}
BAD_REQUESTS: dict[str, tuple[Callable[[Gateway, str], httpx.Response], int, str, str | None]] = {
    "missing file": (lambda g, k: _post_form(g, k, {"model": "whisper-1"},
                                             {"other": ("a.txt", b"x")}),
                     400, "missing_required_parameter", "file"),
    "file as a text field": (lambda g, k: _post_form(g, k, {"model": "whisper-1", "file": "x"},
                                                     {"other": ("a.txt", b"x")}),
                             400, "invalid_value", "file"),
    "unsupported response_format": (
        lambda g, k: _post_form(g, k, {"model": "whisper-1", "response_format": "xml"}, CLIP_FILE),
        400, "invalid_value", "response_format"),
    "granularities without verbose_json": (
        lambda g, k: _post_form(g, k, {"model": "whisper-1", "timestamp_granularities[]": "word"},
                                CLIP_FILE),
        400, "invalid_value", "timestamp_granularities[]"),
    "temperature out of range": (
        lambda g, k: _post_form(g, k, {"model": "whisper-1", "temperature": "3"}, CLIP_FILE),
        400, "invalid_value", "temperature"),
    "not audio": (lambda g, k: _post_form(g, k, {"model": "whisper-1"},
                                          {"file": ("clip.wav", b"RIFF not really", "audio/wav")}),
                  400, "invalid_audio_file", "file"),
    "json body": (lambda g, k: httpx.post(f"{g.base_url}/audio/transcriptions",
                                          json={"model": "whisper-1"},
                                          headers={"authorization": f"Bearer {k}"}),
                  415, "unsupported_media_type", None),
    "speed out of range": (lambda g, k: _post_speech(g, k, {"speed": 5}),
                           400, "invalid_value", "speed"),
    "input too long": (lambda g, k: _post_speech(g, k, {"input": "a" * 4097}),
                       400, "string_above_max_length", "input"),
    "missing voice": (lambda g, k: _post_speech(g, k, {"voice": None}),
                      400, "missing_required_parameter", "voice"),
    "unsupported speech format": (lambda g, k: _post_speech(g, k, {"response_format": "ogg"}),
                                  400, "invalid_value", "response_format"),
    "instructions on tts-1": (lambda g, k: _post_speech(g, k, {"instructions": "Whisper."}),
                              400, "invalid_value", "instructions"),
    "sse on tts-1": (lambda g, k: _post_speech(g, k, {"stream_format": "sse"}),
                     400, "invalid_value", "stream_format"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_openai_errors_and_reach_no_upstream(
    gateway: Gateway, fakes: list[FakeAudio], case: str
) -> None:
    send, status, code, param = BAD_REQUESTS[case]
    key = _key(gateway)
    response = send(gateway, key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    assert fakes[0].speeches == [] and fakes[0].forms == []
    assert all(row["cost_micro"] == 0 for row in gateway.usage_rows(key))


def test_a_file_over_25_mb_is_refused_with_413(gateway: Gateway, fakes: list[FakeAudio]) -> None:
    key = _key(gateway)
    big = io.BytesIO(bytes(25 * 1024 * 1024 + 1))
    response = _post_form(gateway, key, {"model": "whisper-1"}, {"file": ("big.wav", big)})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("file_too_large", "file")
    assert fakes[0].forms == []
