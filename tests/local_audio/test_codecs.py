"""Encoding replies, decoding uploads and resampling, on signals whose answer is known."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from sluice.local_audio.codecs import Samples, decode, encode, resample
from sluice.local_audio.formats import AudioFormatError, content_type
from sluice.local_audio.whisper_features import WINDOW_FRAMES, log_mel_window
from tests.local_audio.conftest import require_soundfile

RATE = 24_000


def tone(frequency: float, seconds: float, rate: int = RATE) -> Samples:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: Samples, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_wav_is_16_bit_mono_at_the_given_rate() -> None:
    samples = tone(440, 1.5)
    data = encode(samples, RATE, "wav")
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, RATE)
        assert reader.getnframes() == len(samples)
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert np.allclose(pcm / 32767.0, samples, atol=1e-4)


def test_pcm_is_raw_little_endian_16_bit() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], dtype=np.float32)
    data = encode(samples, RATE, "pcm")
    assert np.frombuffer(data, dtype="<i2").tolist() == [0, 16383, -16383, 32767, -32767, 32767]


@pytest.mark.parametrize(
    ("response_format", "magic"), [("mp3", None), ("opus", b"OggS"), ("flac", b"fLaC")]
)
def test_compressed_formats_decode_back_to_the_same_tone(
    response_format: str, magic: bytes | None
) -> None:
    require_soundfile()
    samples = tone(440, 2.5)
    data = encode(samples, RATE, response_format)
    if magic is not None:
        assert data.startswith(magic)
    if response_format == "opus":
        assert b"OpusHead" in data[:200]
    assert len(data) < len(samples) * 2  # compressed below 16-bit PCM
    decoded = decode(data)
    assert decoded.sample_rate == RATE
    # Codec delay and padding add at most a few tens of milliseconds.
    assert abs(len(decoded.samples) - len(samples)) / RATE < 0.1
    assert decoded.duration_s == pytest.approx(len(decoded.samples) / RATE)
    assert dominant_frequency(decoded.samples, RATE) == pytest.approx(440, abs=2)


def test_content_types_match_openai() -> None:
    assert content_type("mp3") == "audio/mpeg"
    assert content_type("wav") == "audio/wav"
    assert content_type("pcm") == "audio/pcm"


def test_aac_cannot_be_encoded() -> None:
    with pytest.raises(AudioFormatError) as refused:
        encode(tone(440, 0.1), RATE, "aac")
    assert refused.value.param == "response_format"


def test_stereo_is_mixed_down_to_mono() -> None:
    require_soundfile()
    import soundfile

    left, right = tone(440, 1.0, 48_000), tone(1000, 1.0, 48_000)
    out = io.BytesIO()
    soundfile.write(out, np.stack([left, right], axis=1), 48_000, format="WAV")
    decoded = decode(out.getvalue())
    assert decoded.sample_rate == 48_000 and decoded.samples.ndim == 1
    assert np.allclose(decoded.samples, (left + right) / 2, atol=1e-4)


def wav_bytes(samples: Samples, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(encode(samples, rate, "pcm"))
    return out.getvalue()


def test_decoding_converts_to_the_target_rate_and_reports_the_source_duration() -> None:
    require_soundfile()
    decoded = decode(wav_bytes(tone(440, 2.0, 44_100), 44_100), target_rate=16_000)
    assert decoded.sample_rate == 16_000
    assert len(decoded.samples) == 32_000
    assert decoded.duration_s == pytest.approx(2.0)
    assert dominant_frequency(decoded.samples, 16_000) == pytest.approx(440, abs=1)


def test_decoding_refuses_audio_longer_than_the_limit() -> None:
    require_soundfile()
    data = wav_bytes(tone(440, 3.0, 8_000), 8_000)
    assert decode(data, max_seconds=3.0).duration_s == pytest.approx(3.0)
    with pytest.raises(AudioFormatError, match="^the audio is 3 s long; .* at most 2 s") as refused:
        decode(data, max_seconds=2.0)
    assert refused.value.param == "file"


def flac_of_unstated_length(seconds: int, rate: int) -> bytes:
    """FLAC of silence whose header leaves the length out, as a streaming encoder writes it."""
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, np.zeros(rate * seconds, dtype=np.float32), rate, format="FLAC")
    data = bytearray(out.getvalue())
    # STREAMINFO (after "fLaC" and its 4-byte block header) holds the total sample count in
    # the low 36 bits of its bytes 10 to 17; zero means "unknown".
    fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = fields.to_bytes(8, "big")
    return bytes(data)


def test_a_compressed_upload_longer_than_the_limit_is_refused_before_decoding() -> None:
    require_soundfile()
    import soundfile

    # 10 minutes of FLAC silence in a few kilobytes: decoded, it would be a thousand times that.
    out = io.BytesIO()
    soundfile.write(out, np.zeros(8_000 * 600, dtype=np.float32), 8_000, format="FLAC")
    data = out.getvalue()
    assert len(data) < 100_000
    with pytest.raises(AudioFormatError, match="600 s long; .* at most 60 s") as refused:
        decode(data, max_seconds=60.0)
    assert refused.value.param == "file"


def test_an_upload_that_does_not_state_its_length_is_refused() -> None:
    require_soundfile()
    data = flac_of_unstated_length(5, 8_000)
    with pytest.raises(AudioFormatError, match="does not state its length") as refused:
        decode(data, max_seconds=60.0)
    assert refused.value.param == "file"


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 100, b"RIFF\x00\x00\x00\x00WAVE"])
def test_undecodable_uploads_are_refused(data: bytes) -> None:
    require_soundfile()
    with pytest.raises(AudioFormatError) as refused:
        decode(data)
    assert refused.value.param == "file"


@pytest.mark.parametrize(("from_rate", "to_rate"), [(24_000, 16_000), (8_000, 16_000)])
def test_resampling_keeps_pitch_and_duration(from_rate: int, to_rate: int) -> None:
    samples = tone(440, 2.0, from_rate)
    converted = resample(samples, from_rate, to_rate)
    assert len(converted) == 2 * to_rate
    assert dominant_frequency(converted, to_rate) == pytest.approx(440, abs=1)
    assert float(np.max(np.abs(converted))) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(("from_rate", "to_rate"), [(44_100, 16_000), (24_000, 16_000)])
def test_long_audio_is_resampled_in_blocks_without_seams(from_rate: int, to_rate: int) -> None:
    # 95 s spans several 30-s blocks: the pieces must join with no gap, repeat or click, so the
    # result matches the tone computed at the new rate everywhere but the outermost samples.
    # The frequency is chosen so that no block holds a whole number of cycles, where the edges
    # of a block would meet seamlessly by chance.
    seconds, frequency = 95.0, 437.77
    converted = resample(tone(frequency, seconds, from_rate), from_rate, to_rate)
    expected = tone(frequency, seconds, to_rate)
    assert len(converted) == len(expected)
    interior = slice(to_rate // 10, -to_rate // 10)
    assert float(np.max(np.abs(converted[interior] - expected[interior]))) < 1e-3


def test_resampling_drops_what_the_new_rate_cannot_carry() -> None:
    # 10 kHz is above 16 kHz's Nyquist: linear interpolation would fold it to 6 kHz.
    converted = resample(tone(10_000, 1.0), RATE, 16_000)
    assert float(np.max(np.abs(converted))) < 0.01


def test_whisper_features_place_a_tone_in_its_mel_band() -> None:
    low = log_mel_window(tone(300, 5.0, 16_000))
    high = log_mel_window(tone(3000, 5.0, 16_000))
    assert low.shape == high.shape == (80, WINDOW_FRAMES)
    frame = 100  # inside the tone, away from the edges
    assert int(np.argmax(low[:, frame])) < int(np.argmax(high[:, frame]))
    # Zero padding after the 5 s tone sits at the floor: 8 decades under the peak, scaled.
    assert float(low[:, 2000].max()) == pytest.approx(float(low.max()) - 2.0, abs=1e-3)
    with pytest.raises(ValueError):
        log_mel_window(np.zeros(16_000 * 31, dtype=np.float32))


def test_the_engine_api_knows_whispers_rate_without_importing_numpy() -> None:
    from sluice.local_audio import asr
    from sluice.local_audio.whisper_features import WHISPER_SAMPLE_RATE

    assert asr._WHISPER_RATE == WHISPER_SAMPLE_RATE
