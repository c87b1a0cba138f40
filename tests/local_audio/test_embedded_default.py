"""The embedded default (``make run``, ``sluice serve`` without a config) serves the local audio
engines under their own names and OpenAI's, free, and its start-up banner shows how to call
them."""

from __future__ import annotations

from sluice.core import MeteredUnits, UsageTokens
from sluice.local_audio.asr import transcription_available
from sluice.local_audio.tts import speech_available
from sluice.metering.pricing import PriceBook
from sluice.providers.configs import LocalAudioConfig
from sluice.serve import _banner, _example_model
from sluice.settings import default_settings
from tests.conftest import skip_unless_ci


def test_the_default_has_a_free_local_audio_channel_with_openai_names() -> None:
    if not (speech_available() and transcription_available()):
        skip_unless_ci("the local audio engines (the `local` extra) are not installed")
    settings = default_settings()
    (audio,) = [c for c in settings.channels if isinstance(c, LocalAudioConfig)]
    assert audio.name == "local-audio" and audio.capabilities.managed_server == "local-audio"
    assert audio.models == ["hibari", "whisper-tiny.en"]
    for alias in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"):
        assert audio.serves(alias) and audio.upstream_model(alias) == "hibari"
    assert audio.upstream_model("whisper-1") == "whisper-tiny.en"
    prices = PriceBook(settings.pricing)
    spoken = UsageTokens(0, 0, units=MeteredUnits(characters=4096))
    heard = UsageTokens(0, 0, units=MeteredUnits(audio_seconds=1800))
    # Billed as the model called: free, although tts-1 and whisper-1 have OpenAI's prices.
    for alias, target, usage in [
        ("tts-1", "hibari", spoken),
        ("whisper-1", "whisper-tiny.en", heard),
    ]:
        rate = prices.served_rate(alias, target, units=True)
        assert rate is not None and rate.cost(usage) == 0
        openai_rate = prices.served_rate(alias, alias, units=True)
        assert openai_rate is not None and openai_rate.cost(usage) > 0


def test_the_banner_shows_speech_and_transcription_next_to_chat() -> None:
    audio = LocalAudioConfig(
        name="local-audio",
        models=["hibari", "whisper-tiny.en"],
        model_map={"tts-1": "hibari", "whisper-1": "whisper-tiny.en"},
    )
    assert _example_model([audio], "speech", "hibari") == "tts-1"
    assert _example_model([audio], "transcriptions", "whisper-tiny.en") == "whisper-1"
    assert _example_model([audio], "chat", "smollm2-135m-instruct") is None
    banner = _banner("127.0.0.1", 8080, "sk-demo", None, "smollm2", "tts-1", "whisper-1")
    assert "curl http://127.0.0.1:8080/v1/chat/completions" in banner
    assert "curl http://127.0.0.1:8080/v1/audio/speech" in banner
    assert '"model": "tts-1", "voice": "alloy"' in banner and "--output hello.wav" in banner
    assert "-F model=whisper-1 -F file=@hello.wav" in banner
    assert "audio" not in _banner("127.0.0.1", 8080, "sk-demo", None, "smollm2")
