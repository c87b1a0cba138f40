"""The endpoint specs a gateway serves (``spec.py`` says what a spec declares)."""

from __future__ import annotations

from sluice.endpoints.audio import AUDIO_SPECS
from sluice.endpoints.images import IMAGE_SPECS
from sluice.endpoints.rerank import RERANK_SPECS
from sluice.endpoints.responses import RESPONSES_SPEC
from sluice.endpoints.spec import EndpointRegistry, EndpointSpec
from sluice.endpoints.text import TEXT_SPECS

__all__ = ["EndpointRegistry", "EndpointSpec", "default_specs"]


def default_specs() -> tuple[EndpointSpec, ...]:
    """Every endpoint family Sluice ships; an app may be built with more (or fewer)."""
    return (
        *TEXT_SPECS,
        *IMAGE_SPECS,
        *AUDIO_SPECS,
        *RERANK_SPECS,
        RESPONSES_SPEC,
    )
