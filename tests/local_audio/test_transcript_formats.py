"""A transcript rendered in each of OpenAI's transcription formats (no model needed)."""

from __future__ import annotations

import orjson
import pytest

from sluice.local_audio.asr import Segment, Transcript
from sluice.local_audio.formats import AudioFormatError
from sluice.local_audio.transcript_formats import transcription_body
from tests.openapi_schema import validate_openai

TRANSCRIPT = Transcript(
    text="The quick brown fox. Jumps over the lazy dog.",
    duration_s=3661.25,
    segments=(
        Segment(0.0, 1.5, "The quick brown fox.", (383, 2068), 0, -0.25, 0.01),
        Segment(3600.5, 3661.25, "Jumps over the lazy dog.", (41, 42), 360000, -0.5, 0.02),
    ),
)


def test_json_is_openais_shape_with_duration_usage() -> None:
    body, content_type = transcription_body(TRANSCRIPT, "json")
    assert content_type == "application/json"
    reply = orjson.loads(body)
    validate_openai("CreateTranscriptionResponseJson", reply)
    assert reply == {"text": TRANSCRIPT.text, "usage": {"type": "duration", "seconds": 3662}}


def test_verbose_json_carries_every_segment_field() -> None:
    body, _ = transcription_body(TRANSCRIPT, "verbose_json")
    reply = orjson.loads(body)
    validate_openai("CreateTranscriptionResponseVerboseJson", reply)
    for segment in reply["segments"]:
        validate_openai("TranscriptionSegment", segment)
    assert reply["language"] == "english" and reply["duration"] == 3661.25
    first, second = reply["segments"]
    assert (first["id"], first["start"], first["end"]) == (0, 0.0, 1.5)
    assert first["text"] == " The quick brown fox." and first["tokens"] == [383, 2068]
    assert (second["id"], second["seek"], second["avg_logprob"]) == (1, 360000, -0.5)
    assert 0 < first["compression_ratio"] < 2.4


def test_text_srt_and_vtt() -> None:
    text, text_type = transcription_body(TRANSCRIPT, "text")
    assert (text, text_type) == (f"{TRANSCRIPT.text}\n".encode(), "text/plain; charset=utf-8")
    srt, _ = transcription_body(TRANSCRIPT, "srt")
    assert srt.decode() == (
        "1\n00:00:00,000 --> 00:00:01,500\nThe quick brown fox.\n\n"
        "2\n01:00:00,500 --> 01:01:01,250\nJumps over the lazy dog.\n\n"
    )
    vtt, vtt_type = transcription_body(TRANSCRIPT, "vtt")
    assert vtt_type == "text/vtt; charset=utf-8"
    assert vtt.decode() == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nThe quick brown fox.\n\n"
        "01:00:00.500 --> 01:01:01.250\nJumps over the lazy dog.\n\n"
    )


def test_an_empty_transcript_renders_in_every_format() -> None:
    silent = Transcript(text="", duration_s=2.0)
    assert orjson.loads(transcription_body(silent, "json")[0])["text"] == ""
    validate_openai(
        "CreateTranscriptionResponseVerboseJson",
        orjson.loads(transcription_body(silent, "verbose_json")[0]),
    )
    assert transcription_body(silent, "srt")[0] == b""
    assert transcription_body(silent, "vtt")[0] == b"WEBVTT\n\n"


@pytest.mark.parametrize(
    ("response_format", "says"), [("diarized_json", "speaker"), ("xml", "must be one of")]
)
def test_formats_the_local_recogniser_cannot_produce_are_refused(
    response_format: str, says: str
) -> None:
    with pytest.raises(AudioFormatError, match=says) as refused:
        transcription_body(TRANSCRIPT, response_format)
    assert refused.value.param == "response_format"
