"""What an endpoint is, declared once: its routes, how its body is read and checked, what it
reserves, how its answer is metered, and what kind of answer it is.

The relay (admission, engine, billing, streaming) is written against ``EndpointSpec`` only and
never asks which endpoint it is serving: an endpoint family (images, audio, rerank, ...) is a
module of specs plus its registration in ``default_specs``, not edits across the relay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sluice.core import MeteredUnits, ParsedResponse, StreamKind, UploadedForm, UsageTokens
from sluice.metering.tokens import TokenCounter
from sluice.protocol.validate import RequestView

__all__ = [
    "BodyKind",
    "EndpointRegistry",
    "EndpointSpec",
    "Estimate",
    "EstimateInput",
    "MeterInput",
    "ResponseKind",
]

# json: an OpenAI JSON body (``limits.max_body_bytes``). multipart: a form whose file parts are
# spooled to disk as they arrive and streamed to the upstream (``limits.max_multipart_bytes``).
BodyKind = Literal["json", "multipart"]
# json: one JSON body, or an SSE stream when the request asks to stream (``EndpointSpec.stream``
# says which shape). binary: the upstream's bytes relayed as they arrive with its content type
# (audio, subtitles), capped by ``limits.max_upstream_binary_bytes``.
ResponseKind = Literal["json", "binary"]


@dataclass(frozen=True, slots=True)
class EstimateInput:
    """What an estimator may read: the validated request and the token counter."""

    body: Mapping[str, Any]
    view: RequestView
    tokens: TokenCounter
    default_max_tokens: int  # ``limits.default_max_tokens``: output cap when none was sent
    upload: UploadedForm | None


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a request can use, before any upstream is called: what is reserved."""

    prompt_tokens: int = 0  # counted locally; the reservation adds a margin for tokenizers
    completion_tokens: int = 0  # the output cap over every choice
    units: MeteredUnits | None = None  # images, seconds, characters, calls at their worst


@dataclass(frozen=True, slots=True)
class MeterInput:
    """What metering a successful answer may read."""

    body: Mapping[str, Any]  # the client's request
    view: RequestView
    response: Any  # the parsed JSON answer; None for a binary or streamed answer
    estimate: Estimate
    usage: UsageTokens | None = None  # what the upstream reported, if anything


def _no_text(_response: Any) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    name: str  # usage rows, metrics and channel capabilities name it so
    paths: tuple[str, ...]  # the client's routes (POST)
    upstream_path: str  # the OpenAI path below an upstream's API root
    validate: Callable[[dict[str, Any]], RequestView]
    estimate: Callable[[EstimateInput], Estimate]
    body: BodyKind = "json"
    # One kind for every request, or the kind a request asks for (a transcription answers JSON,
    # plain text or subtitles, or streams events, as its ``response_format`` and ``stream`` say).
    response: ResponseKind | Callable[[Mapping[str, Any]], ResponseKind] = "json"
    # Fields filled in before the body goes upstream (a default model); None: nothing to add.
    with_defaults: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    # Generated text of a whole answer, counted when the upstream reports no usage.
    delivered_text: Callable[[Any], str] = _no_text
    # The answer shown with the locally counted usage when the upstream reported none
    # (OpenAI clients expect ``usage`` in every embeddings answer); None: shown as received.
    show_counted_usage: Callable[[bytes, int], bytes] | None = None
    # Units besides tokens a successful answer used (images returned, characters spoken).
    units: Callable[[MeterInput], MeteredUnits | None] | None = None
    # The whole answer put in the endpoint's one shape, with the usage it bills, whatever the
    # upstream's variant of it (rerank: ids, echoed documents, ``top_n`` and where usage sits
    # differ between servers); ``response`` is the adapter's answer. Raises
    # ``UpstreamBadResponse`` for an answer that is not one (another channel is tried).
    # None: the answer is shown as the adapter returned it.
    reshape: Callable[[MeterInput], ParsedResponse] | None = None
    # ``object`` of the usage chunk added to a stream whose upstream sent none.
    stream_object: str = "chat.completion.chunk"
    # What a streamed answer is made of (``core.StreamKind``): chat-shaped chunks, or typed
    # events relayed as they arrive (images, audio, responses); with ``units``, a stream that
    # completed or reported usage is metered by them too (``MeterInput.response`` is None).
    stream: StreamKind = "chunks"
    # Channel types that serve every OpenAI-wire endpoint forward this one as is.
    openai_wire: bool = True
    # The smallest request for ``model`` (a channel's test request and health probe): a channel
    # is probed with the first spec it serves that has one. None: never used to probe.
    probe_body: Callable[[str], dict[str, Any]] | None = None

    def response_kind(self, body: Mapping[str, Any]) -> ResponseKind:
        """The kind of answer this request gets (``body`` is the validated request)."""
        response = self.response
        return response if isinstance(response, str) else response(body)


@dataclass(frozen=True)
class EndpointRegistry:
    """Every endpoint a gateway serves, by name; built once per app."""

    specs: Mapping[str, EndpointSpec] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: Iterable[EndpointSpec]) -> EndpointRegistry:
        by_name: dict[str, EndpointSpec] = {}
        paths: set[str] = set()
        for spec in specs:
            if spec.name in by_name:
                raise ValueError(f"two endpoint specs are named {spec.name!r}")
            clash = paths.intersection(spec.paths)
            if clash:
                raise ValueError(f"endpoint spec {spec.name!r} reuses the route {min(clash)}")
            paths.update(spec.paths)
            by_name[spec.name] = spec
        return cls(by_name)

    def __getitem__(self, name: str) -> EndpointSpec:
        return self.specs[name]

    def __iter__(self) -> Iterator[EndpointSpec]:
        return iter(self.specs.values())
