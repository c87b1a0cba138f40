"""A model name that becomes one segment of an upstream URL path (Gemini, Azure deployments).

Admission already refuses names no provider could have (``protocol/validate.py``); a name that
is fine in a JSON body can still escape its path segment: ``a/b`` is a legitimate vLLM model but
would address ``models/a/b`` on Gemini. The upstream name may also come from the operator's
``model_map``. Either way it is refused with a 400 before any URL is built, rather than quoted
and left to the upstream (or a proxy in front of it) to decode.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from sluice.errors import InvalidRequest
from sluice.providers.configs import ChannelConfig

__all__ = ["is_path_segment", "model_map_problems", "model_path_segment"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\?#%]")


def is_path_segment(name: str) -> bool:
    return name not in ("", ".", "..") and _UNSAFE.search(name) is None


def model_path_segment(upstream_model: str, requested_model: str) -> str:
    """``upstream_model`` quoted as one URL path segment; InvalidRequest if it cannot be one."""
    if not is_path_segment(upstream_model):
        # The requested name, not the upstream one: a model_map target is the operator's.
        raise InvalidRequest(
            f"The model '{requested_model}' cannot be sent to this channel: its provider "
            "addresses models by URL path, where a name cannot be empty, '.' or '..', nor "
            "contain control characters, '/', '\\', '?', '#' or '%'.",
            param="model",
            code="invalid_model_name",
        )
    return quote(upstream_model, safe="")  # ":" and "@" too: a segment, not a path


def model_map_problems(channels: Iterable[ChannelConfig]) -> list[str]:
    """For ``sluice config check``: model_map targets these channels could never send."""
    return [
        f"channel {c.name}: model_map target '{target}' cannot be used in a {c.type} URL path "
        "(no '/', '\\', '?', '#', '%', not '.' or '..')"
        for c in channels
        for target in c.model_map.values()
        if (segment := c.path_model(target)) is not None and not is_path_segment(segment)
    ]
