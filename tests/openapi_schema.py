"""Validate Sluice responses against OpenAI's published OpenAPI spec (shared/specs).

The spec is OpenAPI 3.1 but still uses the 3.0 keyword ``nullable: true``; a JSON-Schema 2020-12
validator ignores it, so valid ``null`` values would fail. ``_rewrite_nullable`` turns every
``nullable: true`` into a union with null (for ``type``, ``enum``, ``$ref`` and compositions).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "validate_openai", "schema_errors"]

_SPEC_NAME = "openai-openapi.yaml"
# Prefer the project's shared copy (../shared/specs beside the checkout) when it is there; the
# vendored copy in tests/specs keeps a clone that stands alone testable.
_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "specs" / _SPEC_NAME,
    Path(__file__).resolve().parent / "specs" / _SPEC_NAME,
]
SPEC_PATH = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[-1])
_ROOT = "urn:openai-spec"


def _rewrite_nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _rewrite_nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    if "$ref" in node or "allOf" in node or "oneOf" in node or "anyOf" in node:
        return {"anyOf": [node, {"type": "null"}]}
    if "type" in node:
        kind = node["type"]
        node["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    return node


@functools.cache
def _registry() -> Registry:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)
    document = _rewrite_nullable(spec)
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(_ROOT, resource)  # typed Any by referencing
    return registry


def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"{_ROOT}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    errors = _validator(schema_name).iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def validate_openai(schema_name: str, instance: Any) -> None:
    """Assert ``instance`` is valid under the named component schema."""
    problems = schema_errors(schema_name, instance)
    assert not problems, f"{schema_name} violations:\n" + "\n".join(problems[:20])
