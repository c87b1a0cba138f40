"""Text to speech for local-audio channels: hibari, a 6 M-parameter ONNX voice from Kokoro.

The ``hibari-tts`` wheel carries the engine, its grapheme-to-phoneme data and one voice (``heart``,
American English, female); its other voices would be downloaded on first use, so this module only
ever opens the bundled one, by path. A client written for OpenAI names one of OpenAI's voices;
every one of those names is accepted and spoken by the bundled voice, so such clients work
unchanged. Output is 24 kHz mono, the rate OpenAI's ``pcm`` format is defined at.

Why docs/providers.md ("Local audio") chose hibari over Piper, Kokoro and the others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sluice.local_audio.formats import (
    ENCODABLE_FORMATS,
    SPEECH_FORMATS,
    AudioFormatError,
    content_type,
)
from sluice.local_audio.turns import Turns

if TYPE_CHECKING:
    from sluice.local_audio.codecs import Samples

__all__ = [
    "LOCAL_SPEECH_MODEL",
    "LOCAL_VOICE",
    "OPENAI_VOICES",
    "VOICES",
    "MAX_INPUT_CHARS",
    "SAMPLE_RATE",
    "Speech",
    "SpeechEngine",
    "speech_available",
    "validate_speech_request",
]

LOCAL_SPEECH_MODEL: Final = "hibari"
SAMPLE_RATE: Final = 24_000
LOCAL_VOICE: Final = "heart"
# OpenAI's built-in voices (the `voice` enum of CreateSpeechRequest).
OPENAI_VOICES: Final = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
VOICES: Final = (LOCAL_VOICE, *OPENAI_VOICES)
MAX_INPUT_CHARS: Final = 4096  # OpenAI's limit for `input`
MIN_SPEED: Final = 0.25
MAX_SPEED: Final = 4.0


@dataclass(frozen=True, slots=True)
class Speech:
    audio: bytes
    content_type: str
    sample_rate: int
    duration_s: float
    characters: int  # what OpenAI bills speech by


def speech_available() -> bool:
    """The engine, its runtime and the encoder are installed (the ``local`` extra)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("hibari", "onnxruntime", "soundfile")
    )


def validate_speech_request(text: str, voice: str, speed: float, response_format: str) -> None:
    """Raise :class:`AudioFormatError` (with the offending field) for what the engine cannot do.

    Cheap and model-free, so the caller can refuse a request before queueing it for synthesis.
    """
    if not text.strip():
        raise AudioFormatError("input must contain text to speak", param="input")
    if len(text) > MAX_INPUT_CHARS:
        raise AudioFormatError(
            f"input is {len(text)} characters; the maximum is {MAX_INPUT_CHARS}", param="input"
        )
    if voice not in VOICES:
        raise AudioFormatError(
            f"voice {voice!r} is not available locally; use one of: {', '.join(VOICES)}",
            param="voice",
        )
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise AudioFormatError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}", param="speed")
    if response_format not in SPEECH_FORMATS:
        raise AudioFormatError(
            f"response_format must be one of: {', '.join(SPEECH_FORMATS)}",
            param="response_format",
        )
    if response_format not in ENCODABLE_FORMATS:
        supported = ", ".join(f for f in SPEECH_FORMATS if f in ENCODABLE_FORMATS)
        raise AudioFormatError(
            f"response_format {response_format!r} is not available from the local speech engine "
            f"(no {response_format} encoder is installed); use one of: {supported}",
            param="response_format",
        )


def _bundled_voice_model() -> Path:
    from hibari.voices import voice_path

    # download_missing=False: a voice that is not in the wheel raises instead of fetching it.
    return Path(voice_path(LOCAL_VOICE, download_missing=False))


class SpeechEngine:
    """One hibari voice, loaded on first use; calls block, so run them off the event loop.

    Syntheses run one at a time: each is a few tens of milliseconds of CPU per sentence, and the
    machine's cores belong to the gateway first.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._voice: Any = None
        self._turns = Turns()

    def load(self) -> None:
        """Load the voice now (the first synthesis would otherwise: about half a second)."""
        with self._turns:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._voice is None:
            from hibari import Hibari

            voice = Hibari(model=str(_bundled_voice_model()), threads=self.threads)
            _ = voice.g2p  # the lexicon and tagger load lazily too; take that cost here
            self._voice = voice
        return self._voice

    def stream_samples(
        self, text: str, speed: float = 1.0, seed: int | None = None
    ) -> Iterator[Samples]:
        """Float32 samples at :data:`SAMPLE_RATE`, one array per sentence as each is ready.

        The engine is held per sentence, not per request, so a long text does not keep a short
        one queued behind it for seconds. ``seed`` makes the output reproducible.
        """
        with self._turns:
            voice = self._load_locked()
            sentences: list[str] = voice.phonemize(text)
        for index, phonemes in enumerate(sentences):
            sentence_seed = None if seed is None else seed + index
            with self._turns:
                samples: Samples = voice.from_phonemes(phonemes, speed=speed, seed=sentence_seed)
            yield samples

    def synthesize_samples(self, text: str, speed: float = 1.0, seed: int | None = None) -> Samples:
        """The whole text's samples (see :meth:`stream_samples`)."""
        import numpy as np

        parts = list(self.stream_samples(text, speed=speed, seed=seed))
        joined: Samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return joined

    def synthesize(
        self,
        text: str,
        *,
        voice: str = LOCAL_VOICE,
        speed: float = 1.0,
        response_format: str = "mp3",
        seed: int | None = None,
    ) -> Speech:
        validate_speech_request(text, voice, speed, response_format)
        from sluice.local_audio.codecs import encode

        samples = self.synthesize_samples(text, speed=speed, seed=seed)
        if len(samples) == 0:
            raise AudioFormatError(
                "input has nothing the local voice can pronounce (it speaks English)",
                param="input",
            )
        return Speech(
            audio=encode(samples, SAMPLE_RATE, response_format),
            content_type=content_type(response_format),
            sample_rate=SAMPLE_RATE,
            duration_s=len(samples) / SAMPLE_RATE,
            characters=len(text),
        )
