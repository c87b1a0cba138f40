"""The images endpoints: generations (JSON), edits and variations (multipart uploads).

Checks follow OpenAI's rules for the models it documents (``dall-e-2``, ``dall-e-3`` and the
``gpt-image-1`` family); a name outside them (an alias, another vendor's model behind an
OpenAI-compatible channel) gets only the type and range checks every model shares, so the
upstream stays the judge of what it serves.

Metering. Each image returned is counted with its ``SIZE/QUALITY`` (``MeteredUnits.images``,
``image_variant``), which picks its per-image price. gpt-image models also report the tokens
they used (text and image input, image output); when they do, those tokens are what is billed
and the images are only counted (``MeteredUnits.tokens_reported``): OpenAI bills gpt-image by
token, and its per-image table is only what those tokens typically cost. An upstream that
reports no tokens is billed per image. The reservation holds both, summed — the dearest
per-image price for ``n`` images plus the most tokens those images can take — so it bounds
whichever is billed. dall-e models report no tokens and are reserved per image only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.core import MeteredUnits
from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput, MeterInput
from sluice.errors import InvalidRequest
from sluice.protocol.validate import (
    RequestView,
    json_object,
    model_field,
    optional_bool,
    optional_int,
)

__all__ = ["IMAGE_SPECS"]

DEFAULT_IMAGE_MODEL = "dall-e-2"  # OpenAI's default when no GPT-image parameter is sent
GPT_IMAGE_DEFAULT = "gpt-image-1"
_MAX_IMAGES = 10  # n
_MAX_EDIT_IMAGES = 16  # input images of one GPT-image edit
_DALLE2_MAX_UPLOAD = 4 * 1024 * 1024  # dall-e-2 takes PNGs under 4 MB
_SIZE = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")

# Output tokens of one gpt-image-1 image by quality and size (OpenAI's image generation guide);
# the per-image prices are these at the output rate. gpt-image-1-mini's are the same counts.
_OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
_MOST_OUTPUT_PIXELS = 1024 * 1536
_PARTIAL_IMAGE_TOKENS = 100  # each partial image streamed costs this many output tokens
# One input image of an edit: at most ~6,500 image tokens (high input fidelity, not square).
# Reserved at the text rate, so counted twice: gpt-image's image-input rate is at most twice
# its text rate (gpt-image-1: $10 vs $5; -mini: $2.50 vs $2).
_INPUT_IMAGE_TOKENS = 2 * 6_500


# --- what each documented model accepts -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Family:
    """What a documented model accepts; ``None`` leaves a field to the upstream."""

    sizes: frozenset[str] | None
    qualities: frozenset[str] | None
    prompt_chars: int
    max_n: int = _MAX_IMAGES
    gpt_image: bool = False
    style: bool = False
    edits: bool = True
    variations: bool = False


_GPT_IMAGE_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"})
_DALLE2 = _Family(
    sizes=frozenset({"256x256", "512x512", "1024x1024"}),
    qualities=frozenset({"standard", "auto"}),
    prompt_chars=1000,
    variations=True,
)
_DALLE3 = _Family(
    sizes=frozenset({"1024x1024", "1792x1024", "1024x1792"}),
    qualities=frozenset({"standard", "hd", "auto"}),
    prompt_chars=4000,
    max_n=1,
    style=True,
    edits=False,
)
_GPT_IMAGE_1 = _Family(
    sizes=_GPT_IMAGE_SIZES,
    qualities=frozenset({"low", "medium", "high", "auto"}),
    prompt_chars=32000,
    gpt_image=True,
)
# Newer GPT image models (gpt-image-1.5, gpt-image-2, ...): their sizes and qualities grow
# with each release, so only the GPT-image-only parameters are checked.
_GPT_IMAGE_LATER = _Family(sizes=None, qualities=None, prompt_chars=32000, gpt_image=True)


def _family(model: str) -> _Family | None:
    name = model.rsplit("/", 1)[-1]
    if name.startswith("dall-e-2"):
        return _DALLE2
    if name.startswith("dall-e-3"):
        return _DALLE3
    if name in ("gpt-image-1", "gpt-image-1-mini") or re.match(
        r"^gpt-image-1(-mini)?-\d{4}-\d{2}-\d{2}$", name
    ):
        return _GPT_IMAGE_1
    if name.startswith(("gpt-image-", "chatgpt-image-")):
        return _GPT_IMAGE_LATER
    return None


# --- checks shared by the three endpoints -----------------------------------------------------


def _fail(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _choice(body: dict[str, Any], name: str, allowed: frozenset[str] | None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    if allowed is not None and value not in allowed:
        raise _fail(
            f"Invalid value for '{name}': '{value[:100]}'. Supported values are: "
            f"{', '.join(repr(v) for v in sorted(allowed))}.",
            name,
        )
    return value


_RESPONSE_FORMATS = frozenset({"url", "b64_json"})
_BACKGROUNDS = frozenset({"transparent", "opaque", "auto"})
_OUTPUT_FORMATS = frozenset({"png", "jpeg", "webp"})
_MODERATIONS = frozenset({"low", "auto"})
_STYLES = frozenset({"vivid", "natural"})
_FIDELITIES = frozenset({"low", "high"})
_GPT_IMAGE_ONLY = (
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "partial_images",
    "input_fidelity",
)


def _prompt(body: dict[str, Any], family: _Family | None) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise _fail("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise _fail("Invalid type for 'prompt': expected a string.", "prompt", "invalid_type")
    if not prompt.strip():
        raise _fail("Invalid 'prompt': it must not be empty.", "prompt", "empty_string")
    limit = 32000 if family is None else family.prompt_chars
    if len(prompt) > limit:
        raise _fail(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )


def _size(body: dict[str, Any], family: _Family | None, model: str) -> None:
    size = _choice(body, "size", None)
    if size is None:
        return
    if family is not None and family.sizes is not None:
        if size not in family.sizes:
            raise _fail(
                f"Invalid value for 'size': '{size[:100]}' is not supported by {model}. "
                f"Supported values are: {', '.join(repr(v) for v in sorted(family.sizes))}.",
                "size",
            )
    elif size != "auto" and not _SIZE.match(size):
        raise _fail(
            f"Invalid value for 'size': '{size[:100]}'. Expected 'WIDTHxHEIGHT' or 'auto'.", "size"
        )


def _common(body: dict[str, Any], family: _Family | None, model: str) -> int:
    """Checks every images endpoint shares; returns ``n``."""
    max_n = _MAX_IMAGES if family is None else family.max_n
    n = optional_int(body, "n", 1, _MAX_IMAGES) or 1
    if n > max_n:
        raise _fail(f"Invalid 'n': {model} supports only n={max_n}.", "n")
    _size(body, family, model)
    _choice(body, "response_format", _RESPONSE_FORMATS)
    if body.get("user") is not None and not isinstance(body.get("user"), str):
        raise _fail("Invalid type for 'user': expected a string.", "user", "invalid_type")
    if family is not None and family.gpt_image and body.get("response_format") is not None:
        raise _fail(
            f"Unknown parameter: 'response_format'. {model} always returns base64-encoded "
            "images (b64_json).",
            "response_format",
            "unknown_parameter",
        )
    return n


def _gpt_image_fields(body: dict[str, Any], family: _Family | None, model: str) -> bool:
    """The parameters only GPT image models take; returns whether the request streams."""
    _choice(body, "background", _BACKGROUNDS)
    _choice(body, "output_format", _OUTPUT_FORMATS)
    _choice(body, "moderation", _MODERATIONS)
    _choice(body, "input_fidelity", _FIDELITIES)
    optional_int(body, "output_compression", 0, 100)
    optional_int(body, "partial_images", 0, 3)
    stream = optional_bool(body, "stream")
    if family is not None and not family.gpt_image:
        for name in (*_GPT_IMAGE_ONLY, "stream"):
            if body.get(name) not in (None, False):
                raise _fail(
                    f"Unknown parameter: '{name}'. It is supported only by the GPT image "
                    f"models, not by {model}.",
                    name,
                    "unknown_parameter",
                )
    return stream


def _view(endpoint: str, model: str, stream: bool, n: int) -> RequestView:
    return RequestView(endpoint, model, stream, False, None, n)


# --- generations --------------------------------------------------------------------------------


def _model(body: dict[str, Any], default: Callable[[dict[str, Any]], str]) -> str:
    """The model named, or the one ``with_defaults`` fills in (the body is checked again then)."""
    return default(body) if body.get("model") is None else model_field(body)


def _validate_generation(body: Any) -> RequestView:
    body = json_object(body)
    model = _model(body, _default_name)
    family = _family(model)
    _prompt(body, family)
    n = _common(body, family, model)
    quality_choices = None if family is None else family.qualities
    _choice(body, "quality", quality_choices)
    if _choice(body, "style", _STYLES) is not None and family is not None and not family.style:
        raise _fail(
            f"Unknown parameter: 'style'. It is supported only by dall-e-3, not by {model}.",
            "style",
            "unknown_parameter",
        )
    stream = _gpt_image_fields(body, family, model)
    return _view("images", model, stream, n)


def _default_name(body: dict[str, Any]) -> str:
    """OpenAI's default model: dall-e-2, or gpt-image-1 when a parameter only GPT image
    models take is present."""
    typed = _typed_form(body)
    gpt_only = any(typed.get(name) not in (None, False) for name in (*_GPT_IMAGE_ONLY, "stream"))
    return GPT_IMAGE_DEFAULT if gpt_only else DEFAULT_IMAGE_MODEL


def _variation_name(_body: dict[str, Any]) -> str:
    return DEFAULT_IMAGE_MODEL  # the only model with variations


def _with_model(
    default: Callable[[dict[str, Any]], str],
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def fill(body: dict[str, Any]) -> dict[str, Any] | None:
        return None if body.get("model") is not None else {**body, "model": default(body)}

    return fill


# --- edits and variations (multipart forms: every field arrives as text) -------------------


_FORM_INTS = ("n", "output_compression", "partial_images")


def _typed_form(fields: dict[str, Any]) -> dict[str, Any]:
    """The form's text fields as the JSON types the checks expect ("2" -> 2, "true" -> True);
    a value that is not one stays text and is refused by its check."""
    typed = dict(fields)
    for name in _FORM_INTS:
        value = typed.get(name)
        if isinstance(value, str) and len(value) < 20 and value.strip().lstrip("-").isdigit():
            typed[name] = int(value)
    stream = typed.get("stream")
    if isinstance(stream, str) and stream.lower() in ("true", "false"):
        typed["stream"] = stream.lower() == "true"
    return typed


def _files(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The file parts sent as ``name`` or ``name[]``; a text value there is refused."""
    found: list[Any] = []
    for key in (name, name + "[]"):
        value = body.get(key)
        if value is None:
            continue
        found.extend(value if isinstance(value, list) else [value])
    for item in found:
        if not isinstance(item, dict):
            raise _fail(
                f"Invalid type for '{name}': expected a file upload, but got text.",
                name,
                "invalid_type",
            )
    return found


def _check_uploads(
    images: list[dict[str, Any]], family: _Family | None, model: str, max_images: int
) -> None:
    if not images:
        raise _fail(
            "Missing required parameter: 'image' (a file upload).",
            "image",
            "missing_required_parameter",
        )
    if len(images) > max_images:
        raise _fail(
            f"Invalid 'image': {model} takes at most {max_images} image"
            f"{'s' if max_images > 1 else ''}; got {len(images)}.",
            "image",
        )
    for upload in images:
        if not upload.get("size"):
            raise _fail("Invalid 'image': the uploaded file is empty.", "image")
        if family is _DALLE2 and upload["size"] > _DALLE2_MAX_UPLOAD:
            raise _fail(f"Invalid 'image': {model} takes a PNG file under 4 MB.", "image")


def _validate_edit(fields: Any) -> RequestView:
    body = _typed_form(json_object(fields))
    model = _model(body, _default_name)
    family = _family(model)
    if family is not None and not family.edits:
        raise _fail(f"Invalid 'model': {model} does not support image edits.", "model")
    max_images = 1 if family is _DALLE2 else _MAX_EDIT_IMAGES
    _check_uploads(_files(body, "image"), family, model, max_images)
    masks = _files(body, "mask")
    if len(masks) > 1:
        raise _fail("Invalid 'mask': send at most one mask image.", "mask")
    _prompt(body, family)
    n = _common(body, family, model)
    _choice(body, "quality", None if family is None else family.qualities)
    stream = _gpt_image_fields(body, family, model)
    return _view("image_edits", model, stream, n)


def _validate_variation(fields: Any) -> RequestView:
    body = _typed_form(json_object(fields))
    model = _model(body, _variation_name)
    family = _family(model)
    if family is not None and not family.variations:
        raise _fail(
            f"Invalid 'model': {model} does not support image variations (only dall-e-2 does).",
            "model",
        )
    _check_uploads(_files(body, "image"), family, model, 1)
    n = _common(body, family, model)
    return _view("image_variations", model, False, n)


# --- reservation and metering -------------------------------------------------------------------


def _output_tokens(size: Any, quality: Any) -> int:
    """The most output tokens one image of this size and quality can take."""
    qualities = [quality] if quality in _OUTPUT_TOKENS else list(_OUTPUT_TOKENS)
    if size in _OUTPUT_TOKENS["high"]:
        return max(_OUTPUT_TOKENS[name][size] for name in qualities)
    most = max(max(_OUTPUT_TOKENS[name].values()) for name in qualities)  # "auto", unknown
    if isinstance(size, str) and _SIZE.match(size):
        # Larger sizes of newer models: output tokens grow with the pixels.
        width, height = (int(side) for side in size.split("x"))
        most = max(most, -(-most * width * height // _MOST_OUTPUT_PIXELS))
    return most


def _estimate(given: EstimateInput) -> Estimate:
    body, n = _typed_form(dict(given.body)), given.view.n
    # The dearest per-image price for n images: an empty variant matches none, so the most
    # expensive listed image prices it (``UnitRates.image_rate``).
    units = MeteredUnits(images=n)
    family = _family(given.view.model)
    if family is not None and not family.gpt_image:
        return Estimate(units=units)  # dall-e: priced per image, no tokens reported
    prompt = body.get("prompt")
    prompt_tokens = given.tokens.count_text(prompt) if isinstance(prompt, str) else 0
    inputs = 0 if given.upload is None else len(_files(body, "image")) + len(_files(body, "mask"))
    partial = body.get("partial_images")
    per_image = _output_tokens(body.get("size"), body.get("quality"))
    per_image += (partial if isinstance(partial, int) else 0) * _PARTIAL_IMAGE_TOKENS
    return Estimate(
        prompt_tokens=prompt_tokens + inputs * _INPUT_IMAGE_TOKENS,
        completion_tokens=n * per_image,
        units=units,
    )


def _default_quality(model: str) -> str:
    family = _family(model)
    return "standard" if family is _DALLE2 or family is _DALLE3 else "auto"


def _meter(given: MeterInput) -> MeteredUnits | None:
    """The images returned, with the ``SIZE/QUALITY`` the answer reports (gpt-image) or the
    request asked for (dall-e defaults filled in)."""
    response, body, usage = given.response, given.body, given.usage
    if response is None:  # a stream: one completed image per image asked for
        count, shown = given.view.n, {}
    else:
        data = response.get("data") if isinstance(response, dict) else None
        count, shown = (len(data) if isinstance(data, list) else 0), response
    if not count:
        return None
    size = shown.get("size") or body.get("size") or "1024x1024"
    quality = shown.get("quality") or body.get("quality") or _default_quality(given.view.model)
    return MeteredUnits(
        images=count,
        image_variant=f"{size}/{quality}",
        tokens_reported=usage is not None and (usage.prompt + usage.completion) > 0,
    )


IMAGE_SPECS = (
    EndpointSpec(
        name="images",
        paths=("/v1/images/generations",),
        upstream_path="/images/generations",
        validate=_validate_generation,
        estimate=_estimate,
        with_defaults=_with_model(_default_name),
        units=_meter,
        stream="events",
    ),
    EndpointSpec(
        name="image_edits",
        paths=("/v1/images/edits",),
        upstream_path="/images/edits",
        validate=_validate_edit,
        estimate=_estimate,
        body="multipart",
        with_defaults=_with_model(_default_name),
        units=_meter,
        stream="events",
    ),
    EndpointSpec(
        name="image_variations",
        paths=("/v1/images/variations",),
        upstream_path="/images/variations",
        validate=_validate_variation,
        estimate=_estimate,
        body="multipart",
        with_defaults=_with_model(_variation_name),
        units=_meter,
    ),
)
