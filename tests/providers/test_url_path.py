"""``sluice config check``: model_map targets that could never be one URL path segment, for the
providers that address models by path (each config says how, ``path_model``)."""

from __future__ import annotations

from sluice.providers.url_path import model_map_problems
from sluice.settings import parse_settings


def test_model_map_problems_only_for_providers_addressing_models_by_path() -> None:
    bad = {"a": "org/model", "b": "fine", "c": "models/ok", "d": "models/x/y"}
    settings = parse_settings(
        {"channels": [{"name": kind, "type": kind, "model_map": bad} for kind in (
            "openai", "openai-compatible", "local", "anthropic", "azure", "gemini")]}
    )  # fmt: skip
    problems = model_map_problems(settings.channels)
    assert problems == [
        "channel azure: model_map target 'org/model' cannot be used in a azure URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')",
        "channel azure: model_map target 'models/ok' cannot be used in a azure URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')",
        "channel azure: model_map target 'models/x/y' cannot be used in a azure URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')",
        # Gemini's resource prefix is not part of the model's segment.
        "channel gemini: model_map target 'org/model' cannot be used in a gemini URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')",
        "channel gemini: model_map target 'models/x/y' cannot be used in a gemini URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')",
    ]
