"""What the local audio engines read and write, and their refusal: no numpy, no models.

Kept apart from the codecs so that the endpoint layer can check a request's fields in every
worker without loading numpy and libsndfile into workers that never serve audio.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AudioFormatError",
    "SPEECH_FORMATS",
    "ENCODABLE_FORMATS",
    "DECODABLE_CONTAINERS",
    "content_type",
]

# OpenAI's `response_format` values for /v1/audio/speech, in its order.
SPEECH_FORMATS: Final = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# AAC is missing: libsndfile, the encoder used (see codecs.py), has no AAC codec.
ENCODABLE_FORMATS: Final = frozenset({"mp3", "opus", "flac", "wav", "pcm"})
# What codecs.decode reads, for error messages and docs (libsndfile detects the container).
DECODABLE_CONTAINERS: Final = ("wav", "flac", "mp3", "ogg (vorbis, opus)", "aiff")

# The Content-Type OpenAI answers each format with, so clients that branch on it see the same.
_CONTENT_TYPES: Final = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class AudioFormatError(ValueError):
    """Audio that cannot be read, or a request the engine cannot serve; ``param`` names the
    request field at fault, for the caller's 400."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def content_type(response_format: str) -> str:
    return _CONTENT_TYPES[response_format]
