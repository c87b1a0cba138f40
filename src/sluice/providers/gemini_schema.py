"""JSON Schema (as OpenAI clients write it) -> Gemini's OpenAPI 3.0 ``Schema`` subset.

Gemini's ``parameters`` and ``responseSchema`` accept only a documented subset of keywords and
reject the request on anything else (``additionalProperties``, ``$schema``, ``$ref``, ``const``,
``oneOf``, type arrays...). Clients generate such schemas all the time (Pydantic, zod), so they
are rewritten rather than refused: ``$ref`` is inlined from ``$defs``, ``["x", "null"]`` and
``anyOf [.., {type: null}]`` become ``nullable``, ``const`` becomes a one-value ``enum``,
``oneOf`` becomes ``anyOf``, and unknown keywords are dropped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["clean_schema"]

# Keywords of Gemini's Schema object (ai.google.dev API reference, "Schema").
_KEEP_SCALAR = {
    "format", "title", "description", "nullable", "maxItems", "minItems", "minProperties",
    "maxProperties", "minLength", "maxLength", "pattern", "example", "default", "minimum",
    "maximum", "propertyOrdering", "required",
}  # fmt: skip
_MAX_REF_DEPTH = 8  # recursive models cannot be inlined; past this depth the ref is dropped


def _resolve(ref: str, defs: dict[str, Any]) -> Any:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            return defs.get(ref[len(prefix) :])
    return None


def _type_and_nullable(value: Any) -> tuple[str | None, bool]:
    if isinstance(value, str):
        return (None, True) if value == "null" else (value.upper(), False)
    if isinstance(value, list):
        names = [v for v in value if isinstance(v, str)]
        concrete = [v for v in names if v != "null"]
        return (concrete[0].upper() if concrete else None), "null" in names
    return None, False


def _clean(schema: Any, defs: dict[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, defs)
        if target is None or depth >= _MAX_REF_DEPTH:
            return {"type": "OBJECT"} if depth >= _MAX_REF_DEPTH else {}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, defs, depth + 1)
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEEP_SCALAR}
    kind, nullable = _type_and_nullable(schema.get("type"))
    variants = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(variants, list):
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        nullable = nullable or len(kept) < len(variants)
        cleaned = [_clean(v, defs, depth) for v in kept]
        if len(cleaned) == 1:
            out.update({k: v for k, v in cleaned[0].items() if k not in out})
        elif cleaned:
            out["anyOf"] = cleaned
    if kind is not None:
        out["type"] = kind
    if nullable:
        out["nullable"] = True
    if "const" in schema:
        out["enum"] = [str(schema["const"])]
    elif isinstance(schema.get("enum"), list):
        # Gemini enums are strings; a null member is expressed with nullable instead.
        values = schema["enum"]
        out["enum"] = [str(v) for v in values if v is not None]
        if None in values:
            out["nullable"] = True
    properties = schema.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {name: _clean(sub, defs, depth) for name, sub in properties.items()}
        if isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r in properties]
    elif "required" in out:
        del out["required"]
    if isinstance(schema.get("items"), dict):
        out["items"] = _clean(schema["items"], defs, depth)
    return out


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _clean(schema, defs, 0)
