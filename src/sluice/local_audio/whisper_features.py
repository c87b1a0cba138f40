"""Whisper's input features in numpy: the 80-band log-mel spectrogram of a 30-second window.

The same computation as OpenAI's reference implementation (and faster-whisper's port of it):
16 kHz audio, a 400-sample Hann window every 160 samples, Slaney-scaled mel filters, log10,
clamped to 8 decades below the peak and scaled to about [-1, 1]. Kept here rather than taken
from faster-whisper, whose import pulls in PyAV (36 MB of ffmpeg) that the local channel does not
need.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["WHISPER_SAMPLE_RATE", "WINDOW_SAMPLES", "WINDOW_FRAMES", "log_mel_window"]

WHISPER_SAMPLE_RATE: Final = 16_000
WINDOW_SECONDS: Final = 30
WINDOW_SAMPLES: Final = WHISPER_SAMPLE_RATE * WINDOW_SECONDS
_N_FFT: Final = 400
_HOP: Final = 160
WINDOW_FRAMES: Final = WINDOW_SAMPLES // _HOP  # 3000

FloatArray = npt.NDArray[np.float32]


@cache
def _mel_filters(n_mels: int) -> FloatArray:
    """Slaney-style mel filterbank (librosa's ``mel(sr=16000, n_fft=400, htk=False)``)."""
    fft_freqs = np.fft.rfftfreq(n=_N_FFT, d=1.0 / WHISPER_SAMPLE_RATE)
    max_mel = 45.245640471924965  # the mel of 8 kHz on the Slaney scale
    mels = np.linspace(0.0, max_mel, n_mels + 2)
    linear_step = 200.0 / 3
    freqs = linear_step * mels
    log_start_hz = 1000.0
    log_start_mel = log_start_hz / linear_step
    log_step = np.log(6.4) / 27.0
    in_log_region = mels >= log_start_mel
    freqs[in_log_region] = log_start_hz * np.exp(log_step * (mels[in_log_region] - log_start_mel))
    widths = np.diff(freqs)
    ramps = freqs.reshape(-1, 1) - fft_freqs.reshape(1, -1)
    lower = -ramps[:-2] / widths[:-1].reshape(-1, 1)
    upper = ramps[2:] / widths[1:].reshape(-1, 1)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2 : n_mels + 2] - freqs[:n_mels]))[:, np.newaxis]
    return weights.astype(np.float32)


def _power_spectrogram(samples: FloatArray) -> FloatArray:
    """|STFT|² with centred, reflect-padded frames; the last frame dropped as Whisper does."""
    padded = np.pad(samples, _N_FFT // 2, mode="reflect")
    frame_count = 1 + (len(padded) - _N_FFT) // _HOP
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(frame_count, _N_FFT),
        strides=(padded.strides[0] * _HOP, padded.strides[0]),
        writeable=False,
    )
    window = np.hanning(_N_FFT + 1)[:-1].astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (np.abs(spectrum) ** 2).astype(np.float32)
    return power[:-1].T  # (freq bins, frames)


def log_mel_window(samples: FloatArray, n_mels: int = 80) -> FloatArray:
    """Features of up to 30 s of 16 kHz audio, zero-padded: shape ``(n_mels, 3000)``."""
    if len(samples) > WINDOW_SAMPLES:
        raise ValueError("a Whisper window holds at most 30 seconds")
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    window[: len(samples)] = samples
    mel = _mel_filters(n_mels) @ _power_spectrogram(window)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    features: FloatArray = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return features[:, :WINDOW_FRAMES]
