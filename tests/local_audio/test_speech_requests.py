"""What the local speech engine refuses, before any model is loaded (each refusal names the
request field, for the caller's 400)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sluice.local_audio.formats import SPEECH_FORMATS, AudioFormatError
from sluice.local_audio.tts import (
    LOCAL_VOICE,
    MAX_INPUT_CHARS,
    OPENAI_VOICES,
    SpeechEngine,
    validate_speech_request,
)


@pytest.mark.parametrize(
    ("text", "voice", "speed", "response_format", "param"),
    [
        ("", "alloy", 1.0, "mp3", "input"),
        ("   \n", "alloy", 1.0, "mp3", "input"),
        ("x" * (MAX_INPUT_CHARS + 1), "alloy", 1.0, "mp3", "input"),
        ("Hello.", "no-such-voice", 1.0, "mp3", "voice"),
        ("Hello.", "alloy", 0.2, "mp3", "speed"),
        ("Hello.", "alloy", 4.5, "mp3", "speed"),
        ("Hello.", "alloy", 1.0, "ogg", "response_format"),
        ("Hello.", "alloy", 1.0, "aac", "response_format"),
    ],
)
def test_refusals_name_the_field(
    text: str, voice: str, speed: float, response_format: str, param: str
) -> None:
    with pytest.raises(AudioFormatError) as refused:
        validate_speech_request(text, voice, speed, response_format)
    assert refused.value.param == param


def test_aac_refusal_says_what_is_available() -> None:
    with pytest.raises(AudioFormatError, match="mp3, opus, flac, wav, pcm"):
        validate_speech_request("Hello.", "alloy", 1.0, "aac")


@pytest.mark.parametrize("voice", [LOCAL_VOICE, *OPENAI_VOICES])
@pytest.mark.parametrize("response_format", [f for f in SPEECH_FORMATS if f != "aac"])
def test_every_openai_voice_and_other_format_is_accepted(voice: str, response_format: str) -> None:
    validate_speech_request("x" * MAX_INPUT_CHARS, voice, 4.0, response_format)
    validate_speech_request("Hello.", voice, 0.25, response_format)


def test_a_refused_request_does_not_load_the_model() -> None:
    engine = SpeechEngine()
    with pytest.raises(AudioFormatError):
        engine.synthesize("Hello.", voice="alloy", response_format="aac")
    assert engine._voice is None


def test_the_engine_api_loads_neither_numpy_nor_a_model() -> None:
    # Every worker may import the API to check requests; only one serving audio pays for numpy,
    # the codecs and the models (bench/README.md, memory goal).
    probe = (
        "import sys, json\n"
        "import sluice.local_audio.tts, sluice.local_audio.asr, sluice.local_audio.formats\n"
        "import sluice.local_audio.transcript_formats\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert "sluice" in loaded
    heavy = {"numpy", "onnxruntime", "ctranslate2", "tokenizers", "soundfile", "hibari"}
    assert loaded & heavy == set()
