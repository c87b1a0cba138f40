"""Whisper's decoding loop over CTranslate2: windows, timestamps, seeking, silence.

Follows OpenAI's reference ``transcribe``: a 30-second window is decoded greedily with
timestamps; the next window starts where the last complete segment ended, so a word cut by the
window's edge is heard again whole; each window is conditioned on the text so far; a window is
skipped as silence by level, or by Whisper's rule (a likely "no speech" and an unlikely text),
rather than transcribed into the phrases Whisper invents for silence.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from sluice.local_audio.asr import Segment
from sluice.local_audio.codecs import Samples
from sluice.local_audio.whisper_features import (
    WHISPER_SAMPLE_RATE,
    WINDOW_SAMPLES,
    log_mel_window,
)

__all__ = ["WhisperModel", "transcribe"]

_MAX_PROMPT_TOKENS: Final = 223  # Whisper's context is 448 tokens; half is the prompt's at most
_MAX_TOKENS: Final = 448
# A window is treated as silence when it is quieter than this RMS level (about -60 dBFS), or when
# the model gives "no speech" this probability and its text a mean log-probability below this
# (Whisper's own thresholds).
_NO_SPEECH_PROBABILITY: Final = 0.6
_SILENCE_LOG_PROBABILITY: Final = -1.0
_SILENCE_RMS: Final = 1e-3
_TIMESTAMP_SECONDS: Final = 0.02
_MIN_ADVANCE_SAMPLES: Final = WHISPER_SAMPLE_RATE  # never re-read a window from less than 1 s on
_HOP_SAMPLES: Final = 160  # a mel frame: OpenAI's `seek` counts these


@dataclass(frozen=True, slots=True)
class WhisperModel:
    whisper: Any  # ctranslate2.models.Whisper
    tokenizer: Any  # tokenizers.Tokenizer
    n_mels: int
    start_tokens: list[int]  # <|startoftranscript|> [<|en|> <|transcribe|>]
    previous_token: int  # <|startofprev|>: opens a prompt of earlier text
    end_token: int  # <|endoftext|>: every id from here on is a special token
    timestamp_begin: int  # <|0.00|>; each following id is 20 ms later

    @classmethod
    def load(cls, model_dir: Path, threads: int) -> WhisperModel:
        import ctranslate2
        import tokenizers

        whisper = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type="int8", intra_threads=threads
        )
        tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))

        def token(text: str) -> int:
            token_id = tokenizer.token_to_id(text)
            if token_id is None:
                raise RuntimeError(f"the Whisper tokenizer has no {text} token")
            return int(token_id)

        start = [token("<|startoftranscript|>")]
        if whisper.is_multilingual:
            start += [token("<|en|>"), token("<|transcribe|>")]
        return cls(
            whisper=whisper,
            tokenizer=tokenizer,
            n_mels=int(whisper.n_mels),
            start_tokens=start,
            previous_token=token("<|startofprev|>"),
            end_token=token("<|endoftext|>"),
            # The tokenizer file leaves the timestamp tokens out; they follow <|notimestamps|>.
            timestamp_begin=token("<|notimestamps|>") + 1,
        )


def transcribe(
    model: WhisperModel, speech: Samples, prompt: str | None, turn: AbstractContextManager[Any]
) -> list[Segment]:
    """Segments of 16 kHz mono speech, with times from its start.

    Each window is decoded inside ``turn`` (the engine's lock): held per window, not per upload,
    so a short clip is not queued behind a long recording for its whole length.
    """
    segments: list[Segment] = []
    context = _prompt_tokens(model, prompt)
    seek = 0
    while seek < len(speech):
        window = speech[seek : seek + WINDOW_SAMPLES]
        is_last = seek + WINDOW_SAMPLES >= len(speech)
        with turn:
            decoded = _decode_window(model, window, context, is_last)
        offset_s = seek / WHISPER_SAMPLE_RATE
        for segment in decoded.segments:
            segments.append(
                Segment(
                    start_s=round(offset_s + segment.start_s, 2),
                    end_s=round(offset_s + segment.end_s, 2),
                    text=segment.text,
                    tokens=tuple(segment.tokens),
                    seek=seek // _HOP_SAMPLES,
                    avg_logprob=decoded.avg_logprob,
                    no_speech_prob=decoded.no_speech_prob,
                )
            )
        context = (context + decoded.text_tokens)[-_MAX_PROMPT_TOKENS:]
        seek += decoded.advance_samples
    return segments


def _prompt_tokens(model: WhisperModel, prompt: str | None) -> list[int]:
    if not prompt or not prompt.strip():
        return []
    ids: list[int] = model.tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids
    return ids[-_MAX_PROMPT_TOKENS:]


@dataclass(frozen=True, slots=True)
class _DecodedWindow:
    segments: list[_RawSegment]  # times relative to the window's start
    text_tokens: list[int]  # what the next window is conditioned on
    advance_samples: int
    avg_logprob: float  # of the window's decoded tokens
    no_speech_prob: float


def _decode_window(
    model: WhisperModel, window: Samples, context: list[int], is_last: bool
) -> _DecodedWindow:
    whole_window = len(window)
    if whole_window == 0 or float(np.sqrt(np.mean(window**2))) < _SILENCE_RMS:
        return _DecodedWindow([], [], max(whole_window, 1), 0.0, 1.0)
    import ctranslate2

    features = log_mel_window(window, model.n_mels)[np.newaxis]
    prompt = [model.previous_token, *context] if context else []
    result = model.whisper.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features)),
        [[*prompt, *model.start_tokens]],
        beam_size=1,
        max_length=_MAX_TOKENS,
        return_scores=True,
        return_no_speech_prob=True,
    )[0]
    tokens: list[int] = list(result.sequences_ids[0])
    # Whisper's rule: silence when "no speech" is likely and the decoded text is unlikely too.
    average_log_probability = float(result.scores[0]) if result.scores else 0.0
    no_speech_probability = float(result.no_speech_prob)
    if (
        no_speech_probability >= _NO_SPEECH_PROBABILITY
        and average_log_probability < _SILENCE_LOG_PROBABILITY
    ):
        return _DecodedWindow([], [], whole_window, average_log_probability, no_speech_probability)
    segments = _segments(model, tokens, whole_window / WHISPER_SAMPLE_RATE)
    # A segment still open at the window's edge may hold a cut word: unless this is the last
    # window, drop it and start the next window where the last complete segment ended.
    ends_inside = bool(tokens) and _is_timestamp(model, tokens[-1])
    ends_inside = ends_inside and (len(tokens) < 2 or not _is_timestamp(model, tokens[-2]))
    advance = whole_window
    complete = [segment for segment in segments if segment.closed]
    if not is_last and not ends_inside and complete:
        complete_samples = round(complete[-1].end_s * WHISPER_SAMPLE_RATE)
        if complete_samples >= _MIN_ADVANCE_SAMPLES:
            advance = min(complete_samples, whole_window)
            segments = complete
    kept = [segment for segment in segments if segment.text]
    return _DecodedWindow(
        segments=kept,
        text_tokens=[token for segment in segments for token in segment.tokens],
        advance_samples=advance,
        avg_logprob=average_log_probability,
        no_speech_prob=no_speech_probability,
    )


def _is_timestamp(model: WhisperModel, token: int) -> bool:
    return token >= model.timestamp_begin


@dataclass(frozen=True, slots=True)
class _RawSegment:
    start_s: float
    end_s: float
    tokens: list[int]
    text: str
    closed: bool  # ended by a timestamp, not by the end of the output


def _segments(model: WhisperModel, tokens: list[int], window_s: float) -> list[_RawSegment]:
    """The text between timestamp tokens, with its times within the window."""
    segments: list[_RawSegment] = []
    text: list[int] = []
    start_s = 0.0
    for token in tokens:
        if _is_timestamp(model, token):
            time_s = min(round((token - model.timestamp_begin) * _TIMESTAMP_SECONDS, 2), window_s)
            if text:
                segments.append(_RawSegment(start_s, time_s, text, _decode(model, text), True))
                text = []
            start_s = time_s
        elif token < model.end_token:
            text.append(token)
    if text:  # the output stopped mid-segment, at the window's end or at the model's limit
        segments.append(_RawSegment(start_s, window_s, text, _decode(model, text), False))
    return segments


def _decode(model: WhisperModel, tokens: list[int]) -> str:
    text: str = model.tokenizer.decode(tokens)
    return text.strip()
