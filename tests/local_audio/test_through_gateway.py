"""The embedded default's audio, as a new user gets it: the official SDK calls the gateway with
OpenAI's model names, the gateway routes to the local-audio server it manages, and the usage
rows count the characters spoken and the seconds heard, at no charge."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from typing import Any

import pytest

from sluice.local_audio.asr import LOCAL_TRANSCRIPTION_MODEL, transcription_available
from sluice.local_audio.child import LocalAudioServer
from sluice.local_audio.tts import LOCAL_SPEECH_MODEL, speech_available
from tests.conftest import GatewayFactory, skip_unless_ci

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def audio_server() -> Iterator[LocalAudioServer]:
    if not (speech_available() and transcription_available()):
        skip_unless_ci("the local audio engines (the `local` extra) are not installed")
    server = LocalAudioServer()
    server.start()
    yield server
    server.stop()


def test_sdk_speaks_and_transcribes_through_the_gateway(
    gateway_factory: GatewayFactory, audio_server: LocalAudioServer, sdk: Any
) -> None:
    aliases = {"tts-1": LOCAL_SPEECH_MODEL, "whisper-1": LOCAL_TRANSCRIPTION_MODEL}
    models = [LOCAL_SPEECH_MODEL, LOCAL_TRANSCRIPTION_MODEL]
    channel = {"name": "local-audio", "type": "local-audio", "models": models,
               "model_map": aliases}  # fmt: skip
    pricing = {"overrides": {LOCAL_SPEECH_MODEL: {"per_1m_characters": 0.0},
                             LOCAL_TRANSCRIPTION_MODEL: {"per_audio_second": 0.0}}}  # fmt: skip
    gateway = gateway_factory(
        [channel], local_endpoints={"local-audio": audio_server.base_url}, pricing=pricing
    )
    key = gateway.create_key("audio", budget_micro=1_000_000)
    client = sdk(gateway, key)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
    ) as response:
        assert response.headers["content-type"].startswith("audio/wav")
        audio = b"".join(response.iter_bytes())
    with wave.open(io.BytesIO(audio)) as reader:
        assert reader.getnframes() == 0 or reader.getnframes() > reader.getframerate()
    assert len(audio) > 24_000 * 2  # over a second of 16-bit 24 kHz samples
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("fox.wav", audio, "audio/wav")
    ).text
    heard = {w.strip(".,").lower() for w in text.split()}
    spoken = {w.strip(".").lower() for w in SENTENCE.split()}
    assert len(heard & spoken) >= 0.6 * len(spoken), text
    gateway.flush()
    speech_row, transcript_row = gateway.usage_rows(key)
    assert (speech_row["endpoint"], speech_row["status"]) == ("speech", 200)
    assert speech_row["upstream_model"] == LOCAL_SPEECH_MODEL
    assert speech_row["characters"] == len(SENTENCE) and speech_row["cost_micro"] == 0
    assert (transcript_row["endpoint"], transcript_row["status"]) == ("transcriptions", 200)
    assert transcript_row["audio_seconds"] >= 2 and transcript_row["cost_micro"] == 0
