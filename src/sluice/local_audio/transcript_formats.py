"""A local transcript in each of OpenAI's transcription ``response_format`` values.

Pure rendering (no I/O, no numpy), so the local audio server answers transcriptions in the
shapes OpenAI's clients parse: ``json`` and ``verbose_json`` (validated against OpenAI's schema
in the tests), ``text``, ``srt`` and ``vtt``. ``diarized_json`` needs speaker labels the local
recogniser does not produce, and is refused.

Translations (``/v1/audio/translations``, into English) are rendered the same way with
``task="translate"``: the local recogniser hears English only, so its translation is the
transcript. They carry ``usage`` too, which OpenAI's translation schema does not list but
clients ignore, so the gateway meters translated seconds as it meters transcribed ones.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Final, Literal

import orjson

from sluice.local_audio.asr import Segment, Transcript
from sluice.local_audio.formats import AudioFormatError

__all__ = [
    "TRANSCRIPTION_FORMATS",
    "RENDERABLE_TRANSCRIPTION_FORMATS",
    "Task",
    "check_transcription_format",
    "transcription_body",
]

# OpenAI's `response_format` values for /v1/audio/transcriptions.
TRANSCRIPTION_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
RENDERABLE_TRANSCRIPTION_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt")
_TEXT_TYPE: Final = "text/plain; charset=utf-8"
_JSON_TYPE: Final = "application/json"
Task = Literal["transcribe", "translate"]  # OpenAI's verbose_json `task`


def check_transcription_format(response_format: str) -> None:
    if response_format in RENDERABLE_TRANSCRIPTION_FORMATS:
        return
    supported = ", ".join(RENDERABLE_TRANSCRIPTION_FORMATS)
    if response_format in TRANSCRIPTION_FORMATS:
        message = (
            f"response_format {response_format!r} needs speaker labels, which the local "
            f"recogniser does not produce; use one of: {supported}"
        )
    else:
        message = f"response_format must be one of: {supported}"
    raise AudioFormatError(message, param="response_format")


def transcription_body(
    transcript: Transcript, response_format: str, task: Task = "transcribe"
) -> tuple[bytes, str]:
    """The response body and its Content-Type."""
    check_transcription_format(response_format)
    if response_format == "json":
        return orjson.dumps({"text": transcript.text, "usage": _usage(transcript)}), _JSON_TYPE
    if response_format == "verbose_json":
        return orjson.dumps(_verbose(transcript, task)), _JSON_TYPE
    if response_format == "text":
        return f"{transcript.text}\n".encode(), _TEXT_TYPE
    if response_format == "srt":
        return _srt(transcript.segments).encode(), _TEXT_TYPE
    return _vtt(transcript.segments).encode(), "text/vtt; charset=utf-8"


def _usage(transcript: Transcript) -> dict[str, Any]:
    # Whole seconds, rounded up, as OpenAI reports (and bills) whisper-1's duration.
    return {"type": "duration", "seconds": math.ceil(transcript.duration_s)}


def _verbose(transcript: Transcript, task: Task) -> dict[str, Any]:
    return {
        "task": task,
        "language": transcript.language,
        "duration": transcript.duration_s,
        "text": transcript.text,
        "segments": [_segment(index, segment) for index, segment in enumerate(transcript.segments)],
        "usage": _usage(transcript),
    }


def _segment(index: int, segment: Segment) -> dict[str, Any]:
    return {
        "id": index,
        "seek": segment.seek,
        "start": segment.start_s,
        "end": segment.end_s,
        "text": f" {segment.text}",  # OpenAI's segments keep the token's leading space
        "tokens": list(segment.tokens),
        "temperature": 0.0,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": _compression_ratio(segment.text),
        "no_speech_prob": segment.no_speech_prob,
    }


def _compression_ratio(text: str) -> float:
    """How repetitive the text is; Whisper reads above 2.4 as a decoding stuck in a loop."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _srt(segments: tuple[Segment, ...]) -> str:
    cues = [
        f"{number}\n{_timestamp(segment.start_s, ',')} --> {_timestamp(segment.end_s, ',')}\n"
        f"{segment.text}\n"
        for number, segment in enumerate(segments, start=1)
    ]
    return "\n".join(cues) + ("\n" if cues else "")


def _vtt(segments: tuple[Segment, ...]) -> str:
    cues = [
        f"{_timestamp(segment.start_s, '.')} --> {_timestamp(segment.end_s, '.')}\n{segment.text}\n"
        for segment in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else "")
