"""The local voice speaks a sentence and the local recogniser hears it back, in every format.

Both engines are the real models from their PyPI wheels, run in this process; nothing here may
reach the network (one test forbids it outright while loading and running fresh engines).
"""

from __future__ import annotations

import io
import socket
import threading
import time
import wave
from typing import Any

import numpy as np
import orjson
import pytest

from sluice.local_audio.asr import TranscriptionEngine
from sluice.local_audio.codecs import decode, encode, resample
from sluice.local_audio.formats import AudioFormatError
from sluice.local_audio.transcript_formats import transcription_body
from sluice.local_audio.tts import SAMPLE_RATE, SpeechEngine
from tests.local_audio.conftest import share_of_words_recognised, words
from tests.openapi_schema import validate_openai

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog."
SECOND_SENTENCE = "Seven purple lamps glow above the quiet harbour."
# Speech runs at about two to four words a second; a 9-word sentence is 1.5 to 6 seconds.
MIN_SECONDS_PER_WORD, MAX_SECONDS_PER_WORD = 0.15, 0.7


def plausible_duration(seconds: float, text: str) -> bool:
    count = len(words(text))
    return count * MIN_SECONDS_PER_WORD <= seconds <= count * MAX_SECONDS_PER_WORD


def test_wav_reply_is_valid_and_of_plausible_length(speech_engine: SpeechEngine) -> None:
    speech = speech_engine.synthesize(SENTENCE, voice="alloy", response_format="wav", seed=1)
    assert speech.content_type == "audio/wav" and speech.characters == len(SENTENCE)
    with wave.open(io.BytesIO(speech.audio)) as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == SAMPLE_RATE
        frames = reader.getnframes()
        pcm = np.frombuffer(reader.readframes(frames), dtype="<i2")
    assert len(speech.audio) == 44 + 2 * frames  # a plain RIFF header, then the samples
    assert frames / SAMPLE_RATE == pytest.approx(speech.duration_s)
    assert plausible_duration(speech.duration_s, SENTENCE)
    # Sound, not silence or clipping: a speech-like level, peaks below full scale.
    rms = float(np.sqrt(np.mean((pcm / 32768.0) ** 2)))
    assert 0.01 < rms < 0.5
    assert int(np.max(np.abs(pcm))) < 32767


def test_slower_speech_is_longer(speech_engine: SpeechEngine) -> None:
    normal = speech_engine.synthesize(SENTENCE, response_format="pcm", seed=1)
    slow = speech_engine.synthesize(SENTENCE, response_format="pcm", speed=0.5, seed=1)
    assert len(normal.audio) == 2 * round(normal.duration_s * SAMPLE_RATE)
    assert slow.duration_s == pytest.approx(2 * normal.duration_s, rel=0.25)


def test_same_seed_same_audio(speech_engine: SpeechEngine) -> None:
    first = speech_engine.synthesize(SENTENCE, response_format="pcm", seed=7)
    again = speech_engine.synthesize(SENTENCE, response_format="pcm", seed=7)
    other = speech_engine.synthesize(SENTENCE, response_format="pcm", seed=8)
    assert first.audio == again.audio != other.audio


@pytest.mark.parametrize("text", ["🙂🙂", "中文", "\u200b"])
def test_input_with_nothing_to_pronounce_is_refused(speech_engine: SpeechEngine, text: str) -> None:
    # Otherwise the reply would be an empty (and for MP3 and FLAC, zero-byte) file.
    with pytest.raises(AudioFormatError) as refused:
        speech_engine.synthesize(text, response_format="mp3")
    assert refused.value.param == "input"


def test_long_input_is_streamed_sentence_by_sentence(speech_engine: SpeechEngine) -> None:
    text = " ".join([SENTENCE, SECOND_SENTENCE, "And a third one, to be sure."])
    parts = list(speech_engine.stream_samples(text, seed=2))
    assert len(parts) == 3
    assert all(plausible_duration(len(part) / SAMPLE_RATE, SENTENCE) for part in parts[:2])
    whole = speech_engine.synthesize(text, response_format="pcm", seed=2)
    assert whole.audio == encode(np.concatenate(parts), SAMPLE_RATE, "pcm")


@pytest.mark.parametrize("response_format", ["wav", "mp3", "opus", "flac"])
def test_spoken_sentence_is_transcribed_back(
    speech_engine: SpeechEngine,
    transcription_engine: TranscriptionEngine,
    response_format: str,
) -> None:
    speech = speech_engine.synthesize(
        SENTENCE, voice="nova", response_format=response_format, seed=3
    )
    transcript = transcription_engine.transcribe(speech.audio)
    assert share_of_words_recognised(SENTENCE, transcript.text) >= 0.6, transcript.text
    assert transcript.duration_s == pytest.approx(speech.duration_s, abs=0.1)


def test_stereo_48_khz_upload_is_transcribed(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    import soundfile

    samples = speech_engine.synthesize_samples(SENTENCE, seed=3)
    upsampled = resample(samples, SAMPLE_RATE, 48_000)
    upload = io.BytesIO()
    soundfile.write(upload, np.stack([upsampled, upsampled], axis=1), 48_000, format="WAV")
    transcript = transcription_engine.transcribe(upload.getvalue())
    assert share_of_words_recognised(SENTENCE, transcript.text) >= 0.6, transcript.text


def test_audio_longer_than_one_window_is_transcribed_whole(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    first = speech_engine.synthesize_samples(SENTENCE, seed=3)
    second = speech_engine.synthesize_samples(SECOND_SENTENCE, seed=3)
    gap = np.zeros(SAMPLE_RATE * 31, dtype=np.float32)  # pushes the second into window two
    samples = np.concatenate([first, gap, second])
    transcript = transcription_engine.transcribe_samples(samples, SAMPLE_RATE)
    assert transcript.duration_s == pytest.approx(len(samples) / SAMPLE_RATE)
    assert share_of_words_recognised(SENTENCE, transcript.text) >= 0.6, transcript.text
    assert share_of_words_recognised(SECOND_SENTENCE, transcript.text) >= 0.6, transcript.text
    first_segment, *_, last_segment = transcript.segments
    assert first_segment.start_s < 1.0
    assert share_of_words_recognised(SECOND_SENTENCE, last_segment.text) >= 0.6
    # Whisper tiny's timestamps are coarse (leading silence is often not measured), so only
    # the order is checked: the second sentence is placed in the second window.
    assert first_segment.end_s <= 30.0 <= last_segment.start_s <= last_segment.end_s
    assert last_segment.end_s <= transcript.duration_s + 0.05


ORDINALS = ("one two three four five six seven eight nine ten eleven twelve").split()


def test_a_sentence_across_the_window_edge_is_heard_whole(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    # About 50 s of unbroken speech: one sentence straddles the 30-second window edge, which a
    # fixed cut would garble; seeking to the last complete segment hears it whole.
    sentences = [f"Sentence number {n} is about a red barn and a green tractor." for n in ORDINALS]
    samples = speech_engine.synthesize_samples(" ".join(sentences), seed=3)
    assert len(samples) / SAMPLE_RATE > 40
    transcript = transcription_engine.transcribe_samples(samples, SAMPLE_RATE)
    heard = words(transcript.text)
    assert [word for word in heard if word in ORDINALS] == list(ORDINALS), transcript.text
    assert heard.count("tractor") == len(ORDINALS), transcript.text
    starts = [segment.start_s for segment in transcript.segments]
    assert starts == sorted(starts)
    assert all(segment.start_s <= segment.end_s for segment in transcript.segments)


def test_silence_and_hiss_transcribe_to_nothing(
    transcription_engine: TranscriptionEngine,
) -> None:
    silence = np.zeros(16_000 * 3, dtype=np.float32)
    hiss = (np.random.default_rng(0).standard_normal(16_000 * 3) * 0.003).astype(np.float32)
    assert transcription_engine.transcribe_samples(silence, 16_000).text == ""
    assert transcription_engine.transcribe_samples(hiss, 16_000).text == ""


def test_prompt_is_accepted_and_language_other_than_english_refused(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    audio = speech_engine.synthesize(SENTENCE, response_format="flac", seed=3).audio
    prompted = transcription_engine.transcribe(audio, prompt="A pangram about a fox.")
    assert share_of_words_recognised(SENTENCE, prompted.text) >= 0.6, prompted.text
    assert "pangram" not in prompted.text.lower()  # the prompt conditions, it is not echoed
    english = transcription_engine.transcribe(audio, language="en")
    assert share_of_words_recognised(SENTENCE, english.text) >= 0.6
    with pytest.raises(AudioFormatError) as refused:
        transcription_engine.transcribe(audio, language="fr")
    assert refused.value.param == "language"


def test_engines_load_and_run_with_the_network_forbidden(
    speech_engine: SpeechEngine,
    transcription_engine: TranscriptionEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The module fixtures prove the wheels are installed; fresh engines load from scratch here.
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network access is forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    speech = SpeechEngine().synthesize(SENTENCE, voice="onyx", response_format="mp3", seed=5)
    decoded = decode(speech.audio)
    assert decoded.sample_rate == SAMPLE_RATE
    assert plausible_duration(decoded.duration_s, SENTENCE)
    transcript = TranscriptionEngine().transcribe(speech.audio)
    assert share_of_words_recognised(SENTENCE, transcript.text) >= 0.6, transcript.text
    assert attempts == []


def test_a_short_clip_is_not_queued_behind_a_long_recording(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    # The recogniser is taken a 30-second window at a time, in turn: a clip asked for while a
    # 2-minute recording is being transcribed is done after one of its windows, not all four.
    short = speech_engine.synthesize(SENTENCE, response_format="wav", seed=4).audio
    sentence = speech_engine.synthesize_samples(SECOND_SENTENCE, seed=4)
    pause = np.zeros(SAMPLE_RATE * 5, dtype=np.float32)
    recording = np.concatenate([sentence, pause] * 14)  # ~ 2 minutes, speech in every window
    at_16_khz = resample(recording, SAMPLE_RATE, 16_000)
    finished: list[str] = []

    def transcribe_long() -> None:
        transcription_engine.transcribe_samples(at_16_khz, 16_000)
        finished.append("long")

    turns = transcription_engine._turns
    first_ticket = turns._next_ticket
    long_thread = threading.Thread(target=transcribe_long)
    long_thread.start()
    # Two turns taken: the model's (already loaded) and the first window's.
    deadline = time.monotonic() + 10
    while turns._next_ticket < first_ticket + 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    heard = transcription_engine.transcribe(short)
    finished.append("short")
    long_thread.join(120)
    assert finished == ["short", "long"]
    assert share_of_words_recognised(SENTENCE, heard.text) >= 0.6, heard.text


def test_a_real_transcript_renders_as_openais_verbose_json(
    speech_engine: SpeechEngine, transcription_engine: TranscriptionEngine
) -> None:
    audio = speech_engine.synthesize(SENTENCE, response_format="wav", seed=3).audio
    transcript = transcription_engine.transcribe(audio)
    reply = orjson.loads(transcription_body(transcript, "verbose_json")[0])
    validate_openai("CreateTranscriptionResponseVerboseJson", reply)
    (segment,) = reply["segments"]
    validate_openai("TranscriptionSegment", segment)
    assert segment["tokens"] and segment["seek"] == 0
    assert segment["avg_logprob"] > -1.0 and segment["no_speech_prob"] < 0.6
    assert 0.0 <= segment["start"] < segment["end"] <= transcript.duration_s + 0.05
    assert share_of_words_recognised(SENTENCE, segment["text"]) >= 0.6
