"""Whether a key may use a model and whether any channel serves it: one answer for every route.

The chat, completions, embeddings and moderations routes and both Anthropic routes all ask
``check_model`` (through admission, or directly for ``count_tokens``), so the same request gets
the same refusal whichever route it came in on: 403 ``model_not_allowed`` before 404
``model_not_found`` (a key's allow-list is checked first, so a restricted key learns nothing
about which other models are served). ``GET /v1/models/{id}`` is the one deliberate difference:
like the listing, it does not show a key the models it may not use, so a disallowed model is
404 ``model_not_found`` there (what OpenAI answers for a model outside the project).
"""

from __future__ import annotations

from sluice.errors import NotFound, PermissionDenied
from sluice.keys import KeyRecord
from sluice.routing import Router

__all__ = ["check_model", "model_not_found"]


def model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def check_model(router: Router, key: KeyRecord, model: str) -> None:
    """Raise 403 ``model_not_allowed`` or 404 ``model_not_found``; return if the model may run."""
    if not key.allows_model(model):
        raise PermissionDenied(
            f"This API key is not allowed to use the model '{model}'.",
            param="model",
            code="model_not_allowed",
        )
    if not router.has_model(model):
        raise model_not_found(model)
