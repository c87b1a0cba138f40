"""Console forms to admin API bodies: the same services then validate them (one set of rules).

An empty field means "not set" on create and "clear" on edit; numbers that do not parse are
passed on as text, so the service's own validation names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["key_body", "channel_body", "split_list"]

_KEY_NUMBERS = {"budget_usd": float, "rpm": int, "tpm": int, "max_concurrent": int}
_CHANNEL_NUMBERS = {"priority": int, "weight": int, "timeout_s": float}


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text


def key_body(form: Mapping[str, str], *, editing: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "name" in form:
        body["name"] = form["name"].strip()
    for field, kind in _KEY_NUMBERS.items():
        if field not in form:
            continue
        text = form[field].strip()
        if text:
            body[field] = _number(text, kind)
        elif editing:
            body[field] = None
    if "models" in form:
        body["models"] = split_list(form["models"])
    if "allowed_ips" in form:
        body["allowed_ips"] = split_list(form["allowed_ips"])  # [] allows every address
    if "expires_at" in form:
        text = form["expires_at"].strip()
        if text:
            body["expires_at"] = text if "T" in text else f"{text}T00:00:00Z"
        elif editing:
            body["expires_at"] = None
    return body


def channel_body(form: Mapping[str, str], *, editing: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field in ("name", "type", "base_url", "api_key", "test_model"):
        text = form.get(field, "").strip()
        if text:
            body[field] = text
    if "models" in form:
        body["models"] = split_list(form["models"])
    for field, kind in _CHANNEL_NUMBERS.items():
        text = form.get(field, "").strip()
        if text:
            body[field] = _number(text, kind)
        elif editing and field == "timeout_s":
            body[field] = None
    return body
