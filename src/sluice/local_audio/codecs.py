"""Audio in and out of the local engines: decoding uploads, encoding replies, resampling.

libsndfile (through ``soundfile``, whose wheel bundles it with its MP3, Vorbis, Opus and FLAC
codecs) does the container and codec work, so no ffmpeg binary is needed. It has no AAC encoder,
and reads neither MP4/M4A nor WebM: those are refused with
:class:`~sluice.local_audio.formats.AudioFormatError`, which the caller turns into a 400.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from typing import Final

import numpy as np
import numpy.typing as npt

from sluice.local_audio.formats import (
    DECODABLE_CONTAINERS,
    ENCODABLE_FORMATS,
    AudioFormatError,
)

__all__ = ["DecodedAudio", "Samples", "encode", "decode", "resample"]

Samples = npt.NDArray[np.float32]

# libsndfile (major format, subtype) per encoded format.
_SOUNDFILE_FORMATS: Final = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "flac": ("FLAC", "PCM_16"),
}
# Ogg writes through libsndfile have crashed on large single writes (libvorbis allocates stack in
# proportion to one write: libsndfile issue 1095); a second at a time keeps every codec clear of
# that and costs nothing measurable.
_WRITE_BLOCK_SECONDS: Final = 1
_READ_BLOCK_SECONDS: Final = 10
# libsndfile reports a length the header does not give (a streamed FLAC, say) as SF_COUNT_MAX.
_UNKNOWN_LENGTH: Final = 2**62
# Resampling works on overlapping blocks of about this length, keeping this much clear of edges.
_RESAMPLE_BLOCK_SECONDS: Final = 30
_MARGIN_SECONDS: Final = 0.25


def _to_int16(samples: Samples) -> npt.NDArray[np.int16]:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def encode(samples: Samples, sample_rate: int, response_format: str) -> bytes:
    """Mono float samples in [-1, 1] as a file (or raw 16-bit little-endian PCM for ``pcm``)."""
    if response_format not in ENCODABLE_FORMATS:
        supported = ", ".join(sorted(ENCODABLE_FORMATS))
        raise AudioFormatError(
            f"response_format {response_format!r} is not supported by the local speech engine; "
            f"use one of: {supported}",
            param="response_format",
        )
    if response_format == "pcm":
        return _to_int16(samples).tobytes()
    if response_format == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            writer.writeframes(_to_int16(samples).tobytes())
        return out.getvalue()
    import soundfile

    major, subtype = _SOUNDFILE_FORMATS[response_format]
    out = io.BytesIO()
    block = sample_rate * _WRITE_BLOCK_SECONDS
    with soundfile.SoundFile(
        out, mode="w", samplerate=sample_rate, channels=1, format=major, subtype=subtype
    ) as writer:
        for start in range(0, len(samples), block):
            writer.write(samples[start : start + block])
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: Samples  # mono, at sample_rate
    sample_rate: int
    duration_s: float  # of the upload, before any resampling


def decode(
    data: bytes, *, target_rate: int | None = None, max_seconds: float | None = None
) -> DecodedAudio:
    """An uploaded audio file as mono float32 samples, resampled to ``target_rate`` if given.

    Read a block at a time: the channels are mixed down and the rate converted as it goes, so
    memory holds the mono result at the target rate, not the whole upload at its own rate.
    Longer than ``max_seconds`` (judged from the header, before decoding) is refused.
    """
    if not data:
        raise AudioFormatError("the audio file is empty", param="file")
    import soundfile

    readable = ", ".join(DECODABLE_CONTAINERS)
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as reader:
            source_rate = int(reader.samplerate)
            # soundfile reads no more frames than the header states, so checking the stated
            # length bounds the decoding too: a few megabytes of FLAC can expand to hours.
            if reader.frames >= _UNKNOWN_LENGTH:
                raise AudioFormatError(
                    "the audio file does not state its length (as a FLAC written to a pipe); "
                    "re-encode it with its length",
                    param="file",
                )
            if max_seconds is not None and reader.frames > max_seconds * source_rate:
                raise AudioFormatError(
                    f"the audio is {reader.frames / source_rate:.0f} s long; the local "
                    f"recogniser takes at most {max_seconds:.0f} s",
                    param="file",
                )
            blocks = reader.blocks(
                blocksize=source_rate * _READ_BLOCK_SECONDS, dtype="float32", always_2d=True
            )
            rate = target_rate or source_rate
            samples, source_frames = _resample_stream(
                (_mono(block) for block in blocks), source_rate, rate
            )
    except AudioFormatError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFormatError(
            f"could not decode the audio file ({exc}); the local recogniser reads: {readable}",
            param="file",
        ) from exc
    if source_frames == 0:
        raise AudioFormatError("the audio file holds no samples", param="file")
    return DecodedAudio(samples, rate, source_frames / source_rate)


def _mono(frames: npt.NDArray[np.float32]) -> Samples:
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    """Band-limited resampling: no aliasing of the band above the new Nyquist frequency into
    the speech band, as linear interpolation would."""
    block = from_rate * _READ_BLOCK_SECONDS
    blocks = (samples[start : start + block] for start in range(0, len(samples), block))
    resampled, _ = _resample_stream(blocks, from_rate, to_rate)
    return resampled


def _resample_stream(
    blocks: Iterator[Samples], from_rate: int, to_rate: int
) -> tuple[Samples, int]:
    """Resample a stream of mono chunks, and count its input samples.

    Each block is resampled in the frequency domain (exact band-limiting), which treats the
    block as periodic and so rings at its edges: blocks overlap, and only the middle of each,
    ``_MARGIN_SECONDS`` clear of both edges, is kept. Block edges fall on multiples of
    ``step_in``, the input length that maps to a whole number of output samples, so the kept
    pieces join without a gap or a repeated sample.
    """
    if from_rate == to_rate:
        chunks = list(blocks)
        joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return joined.astype(np.float32, copy=False), len(joined)
    common = gcd(from_rate, to_rate)
    step_in, step_out = from_rate // common, to_rate // common
    half_overlap = step_in * max(1, round(_MARGIN_SECONDS * from_rate / step_in))
    block_length = step_in * max(
        4 * half_overlap // step_in, round(_RESAMPLE_BLOCK_SECONDS * from_rate / step_in)
    )
    advance = block_length - 2 * half_overlap

    pieces: list[Samples] = []
    pending = np.zeros(0, dtype=np.float32)
    pending_start = 0  # input index of pending[0]
    kept_until = 0  # input index up to which output has been produced
    total = 0

    def emit(block: Samples, block_start: int, final: bool) -> int:
        resampled = _resample_block(block, from_rate, to_rate)
        keep_end = block_start + len(block) if final else block_start + len(block) - half_overlap
        first = (kept_until - block_start) // step_in * step_out
        last = len(resampled) if final else (keep_end - block_start) // step_in * step_out
        pieces.append(resampled[first:last])
        return keep_end

    for chunk in blocks:
        total += len(chunk)
        pending = np.concatenate([pending, chunk]) if len(pending) else chunk
        while len(pending) >= block_length + half_overlap:
            kept_until = emit(pending[:block_length], pending_start, final=False)
            pending = pending[advance:]
            pending_start += advance
    if len(pending) and pending_start + len(pending) > kept_until:
        emit(pending, pending_start, final=True)
    joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return joined.astype(np.float32, copy=False), total


def _resample_block(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    if len(samples) == 0:
        return samples
    target_length = max(1, round(len(samples) * to_rate / from_rate))
    spectrum = np.fft.rfft(samples)
    kept_bins = target_length // 2 + 1
    if kept_bins <= len(spectrum):
        spectrum = spectrum[:kept_bins]
    else:
        spectrum = np.pad(spectrum, (0, kept_bins - len(spectrum)))
    resampled = np.fft.irfft(spectrum, n=target_length) * (target_length / len(samples))
    return resampled.astype(np.float32)
