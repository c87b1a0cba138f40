"""Check Responses API stream events against the OpenAPI spec, each by its own event schema.

``ResponseStreamEvent`` is a union of some sixty event schemas; validating against the union
reports every variant's complaint. The spec names each variant's ``type`` in an enum, so the
event's own schema is looked up by its type and the event validated against that alone.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
import yaml

from tests.openapi_schema import SPEC_PATH, validate_openai

__all__ = ["event_schema_names", "validate_event", "parse_sse", "validate_frames"]


@functools.cache
def event_schema_names() -> dict[str, str]:
    """Event ``type`` -> the component schema that defines it."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)["components"][
        "schemas"
    ]
    names: dict[str, str] = {}
    for variant in schemas["ResponseStreamEvent"]["anyOf"]:
        name = variant["$ref"].rsplit("/", 1)[-1]
        for kind in schemas[name]["properties"]["type"]["enum"]:
            names[kind] = name
    return names


def validate_event(event: dict[str, Any]) -> None:
    kind = event.get("type")
    assert isinstance(kind, str), event
    name = event_schema_names().get(kind)
    assert name is not None, f"no event schema for type {kind!r}"
    validate_openai(name, event)


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per SSE block; each block must be one event line and one data line."""
    out: list[tuple[str, dict[str, Any]]] = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), block
        out.append((name_line[7:].decode(), orjson.loads(data_line[6:])))
    return out


def validate_frames(frames: list[bytes]) -> list[dict[str, Any]]:
    """Parse frames, check each event names its type, is spec-valid and numbered in order."""
    events = parse_sse(b"".join(frames))
    for position, (name, data) in enumerate(events):
        assert data["type"] == name
        assert data["sequence_number"] == position
        validate_event(data)
    return [data for _, data in events]
