"""The audio endpoints: speech (text to speech), transcriptions and translations (speech to text).

Speech answers audio bytes, relayed as they arrive, or with ``stream_format: "sse"`` a stream of
``speech.audio.delta`` events ended by ``speech.audio.done`` (which carries token usage). It is
priced per character of ``input``; a streamed answer that reports token usage is billed by its
tokens instead (gpt-4o-mini-tts): raw audio carries no usage, so the characters are the only
figure an audio answer has.

Transcriptions and translations take a multipart upload (``file`` up to 25 MB). Their answer
is JSON (``json``, ``verbose_json``), bytes relayed with the upstream's content type (``text``,
``srt``, ``vtt``: not JSON), or, with ``stream``, ``transcript.text.*`` events. They are priced
per second of audio: the duration is read from the upload's own headers with mutagen before
any upstream is called (a started second counts whole) and reserved; the answer's own figure is
billed when it has one (``usage.seconds``, a verbose answer's ``duration``), token usage when the
model reports tokens (gpt-4o-transcribe), and the measured duration otherwise. A file whose
duration cannot be read (WebM, or not audio at all) is refused with 400 ``invalid_audio_file``:
reserving by its size would need a guessed bitrate and over- or under-reserve by an order of
magnitude, and a subtitle answer would leave nothing but that guess to bill.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import mutagen

from sluice.core import MeteredUnits
from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput, MeterInput, ResponseKind
from sluice.errors import InvalidRequest, PayloadTooLarge
from sluice.protocol.validate import (
    RequestView,
    json_object,
    model_field,
    optional_number,
    simple_view,
)

__all__ = [
    "AUDIO_SPECS",
    "MAX_AUDIO_FILE_BYTES",
    "MAX_SPEECH_INPUT_CHARS",
    "audio_seconds",
]

MAX_SPEECH_INPUT_CHARS: Final = 4096
MAX_AUDIO_FILE_BYTES: Final = 25 * 1024 * 1024  # OpenAI's limit for an audio upload
SPEECH_FORMATS: Final = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TRANSCRIPT_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
TRANSLATION_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt")
_PLAIN_FORMATS: Final = frozenset({"text", "srt", "vtt"})  # answered as text, not JSON
_GRANULARITIES: Final = frozenset({"word", "segment"})
# Models named so take neither ``instructions`` nor ``stream_format: "sse"`` (OpenAI's rule).
_CLASSIC_TTS_PREFIX: Final = "tts-1"
_MAX_TEXT_FIELD_CHARS: Final = 4096  # instructions; a transcription prompt


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _optional_text(body: Mapping[str, Any], name: str, max_chars: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    if len(value) > max_chars:
        raise _invalid(
            f"Invalid '{name}': string too long. Expected a string with maximum length "
            f"{max_chars}, but got a string with length {len(value)} instead.",
            name,
            "string_above_max_length",
        )
    return value


def _choice(body: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise _invalid(
            f"Invalid value for '{name}': {str(value)[:64]!r} is not supported; expected one "
            f"of: {', '.join(allowed)}.",
            name,
        )
    return str(value)


# --- speech ------------------------------------------------------------------------------------


def _validate_speech(raw: Any) -> RequestView:
    body = json_object(raw)
    model = model_field(body)
    text = body.get("input")
    if text is None:
        raise _invalid(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    if not isinstance(text, str) or not text:
        raise _invalid("Invalid 'input': expected a non-empty string.", "input")
    _optional_text(body, "input", MAX_SPEECH_INPUT_CHARS)
    voice = body.get("voice")
    if voice is None:
        raise _invalid(
            "Missing required parameter: 'voice'.", "voice", "missing_required_parameter"
        )
    custom = isinstance(voice, dict) and isinstance(voice.get("id"), str)
    if not (isinstance(voice, str) and voice) and not custom:
        raise _invalid("Invalid 'voice': expected a voice name or an object with an 'id'.", "voice")
    _choice(body, "response_format", SPEECH_FORMATS, "mp3")
    optional_number(body, "speed", 0.25, 4.0)
    classic = model.startswith(_CLASSIC_TTS_PREFIX)
    if _optional_text(body, "instructions", _MAX_TEXT_FIELD_CHARS) and classic:
        raise _invalid(f"'instructions' is not supported by the model '{model}'.", "instructions")
    if _choice(body, "stream_format", ("sse", "audio"), "audio") == "sse" and classic:
        raise _invalid(
            f"stream_format 'sse' is not supported by the model '{model}'.", "stream_format"
        )
    # An SSE answer streams typed events (the spec's ``stream``), never chat chunks.
    return simple_view("speech", model, stream=body.get("stream_format") == "sse")


def _speech_kind(body: Mapping[str, Any]) -> ResponseKind:
    return "json" if body.get("stream_format") == "sse" else "binary"


def _characters(body: Mapping[str, Any]) -> MeteredUnits:
    text = body.get("input")
    return MeteredUnits(characters=len(text) if isinstance(text, str) else 0)


def _estimate_speech(given: EstimateInput) -> Estimate:
    return Estimate(units=_characters(given.body))


def _tokens_reported(given: MeterInput) -> bool:
    usage = given.usage
    return usage is not None and bool(usage.prompt or usage.completion)


def _speech_units(given: MeterInput) -> MeteredUnits | None:
    if _tokens_reported(given):
        return None  # an SSE answer that reports its tokens is billed by them
    return _characters(given.body)


# --- transcriptions and translations ------------------------------------------------------------


def _file_part(body: Mapping[str, Any]) -> Mapping[str, Any]:
    part = body.get("file")
    if part is None:
        raise _invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    if isinstance(part, list):
        raise _invalid("Send one audio 'file' per request.", "file")
    if not isinstance(part, dict):
        raise _invalid("Invalid 'file': expected a file upload, not a text field.", "file")
    size = part.get("size", 0)
    if isinstance(size, int) and size > MAX_AUDIO_FILE_BYTES:
        raise PayloadTooLarge(
            f"The audio file is {size} bytes; the maximum is {MAX_AUDIO_FILE_BYTES} bytes "
            "(25 MB). Split the audio or compress it.",
            param="file",
            code="file_too_large",
        )
    return part


def _form_number(body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(
            f"Invalid type for '{name}': expected a number.", name, "invalid_type"
        ) from None
    if not low <= number <= high:
        raise _invalid(
            f"Invalid '{name}': {value} is out of range; expected a value between {low} and "
            f"{high}.",
            name,
        )


def _form_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise _invalid(f"Invalid '{name}': expected true or false.", name, "invalid_type")
    return text == "true"


def _validate_speech_to_text(
    endpoint: str, body: dict[str, Any], formats: tuple[str, ...]
) -> RequestView:
    _file_part(body)
    model = model_field(body)
    response_format = _choice(body, "response_format", formats, "json")
    _optional_text(body, "prompt", _MAX_TEXT_FIELD_CHARS)
    _form_number(body, "temperature", 0.0, 1.0)
    granularities = body.get("timestamp_granularities[]", [])
    if not isinstance(granularities, list) or not set(granularities) <= _GRANULARITIES:
        raise _invalid(
            "Invalid 'timestamp_granularities[]': expected 'word' and/or 'segment'.",
            "timestamp_granularities[]",
        )
    if granularities and response_format != "verbose_json":
        raise _invalid(
            "'timestamp_granularities[]' requires response_format 'verbose_json'.",
            "timestamp_granularities[]",
        )
    # whisper-1 ignores ``stream``: the engine relays the whole answer it gets then.
    return simple_view(endpoint, model, stream=_form_bool(body, "stream"))


def _validate_transcription(raw: Any) -> RequestView:
    body = json_object(raw)
    _optional_text(body, "language", 16)
    return _validate_speech_to_text("transcriptions", body, TRANSCRIPT_FORMATS)


def _validate_translation(raw: Any) -> RequestView:
    body = json_object(raw)
    return _validate_speech_to_text("translations", body, TRANSLATION_FORMATS)


def _transcript_kind(body: Mapping[str, Any]) -> ResponseKind:
    if _form_bool(body, "stream"):
        return "json"  # typed events (the spec's ``stream``), or JSON if the upstream ignores it
    return "binary" if body.get("response_format") in _PLAIN_FORMATS else "json"


def audio_seconds(length_s: float) -> int:
    """Seconds billed for ``length_s`` of audio: a started second counts whole, at least one."""
    return max(1, math.ceil(length_s))


def _measured_seconds(given: EstimateInput) -> int:
    spooled = None if given.upload is None else given.upload.spooled_file("file")
    length: float | None = None
    if spooled is not None:
        try:
            spooled.seek(0)
            found = mutagen.File(spooled)
            length = None if found is None else float(found.info.length)
        # Untrusted bytes through a third-party parser: whatever it raises means the same,
        # a file we cannot measure (a bad upload is a 400, never a 500).
        except Exception:  # noqa: BLE001
            length = None
        finally:
            spooled.seek(0)
    if length is None or not math.isfinite(length) or length <= 0:
        raise InvalidRequest(
            "The duration of the audio file could not be read. Send audio as flac, m4a, mp3, "
            "mp4, ogg (Vorbis, Opus) or wav.",
            param="file",
            code="invalid_audio_file",
        )
    return audio_seconds(length)


def _estimate_audio(given: EstimateInput) -> Estimate:
    return Estimate(units=MeteredUnits(audio_seconds=_measured_seconds(given)))


def _reported_seconds(answer: Mapping[str, Any]) -> int | None:
    usage = answer.get("usage")
    if isinstance(usage, dict) and usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
            return math.ceil(seconds)
    duration = answer.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0:
        return audio_seconds(duration)
    return None


def _audio_units(given: MeterInput) -> MeteredUnits | None:
    if _tokens_reported(given):
        return None  # billed by the tokens it reports (gpt-4o-transcribe, streamed or not)
    answer = given.response
    if isinstance(answer, dict):
        usage = answer.get("usage")
        if isinstance(usage, dict) and usage.get("type") == "tokens":
            return None  # billed by the tokens it reports (gpt-4o-transcribe)
        seconds = _reported_seconds(answer)
        if seconds is not None:
            return MeteredUnits(audio_seconds=seconds)
    measured = given.estimate.units
    return MeteredUnits(audio_seconds=0 if measured is None else measured.audio_seconds)


AUDIO_SPECS = (
    EndpointSpec(
        name="speech",
        paths=("/v1/audio/speech",),
        upstream_path="/audio/speech",
        validate=_validate_speech,
        estimate=_estimate_speech,
        units=_speech_units,
        response=_speech_kind,
        stream="events",
    ),
    EndpointSpec(
        name="transcriptions",
        paths=("/v1/audio/transcriptions",),
        upstream_path="/audio/transcriptions",
        validate=_validate_transcription,
        estimate=_estimate_audio,
        units=_audio_units,
        body="multipart",
        response=_transcript_kind,
        stream="events",
    ),
    EndpointSpec(
        name="translations",
        paths=("/v1/audio/translations",),
        upstream_path="/audio/translations",
        validate=_validate_translation,
        estimate=_estimate_audio,
        units=_audio_units,
        body="multipart",
        response=_transcript_kind,
        stream="events",
    ),
)
