"""Admin request bodies, validated at the edge with msgspec; time parsing shared with the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from sluice.keys import ALL_MODELS
from sluice.storage.key_store import KeyChanges
from sluice.validation_errors import split_validation_error

__all__ = ["BodyError", "KeyCreate", "KeyUpdate", "parse_body", "parse_time", "validate_cidrs"]


def parse_time(value: str | float | int | None) -> float | None:
    """ISO 8601 (``2026-12-31``, ``2026-12-31T23:59:00Z``) or epoch seconds -> epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def validate_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {value!r}") from None
    return values


_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Budget = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
_AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
_Body = TypeVar("_Body", "KeyCreate", "KeyUpdate")


class BodyError(Exception):
    """A request body (or CLI arguments) that does not fit the schema; ``param`` names the field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def parse_body(raw: object, schema: type[_Body]) -> _Body:
    """Validate a decoded JSON body. Types are strict (``"5"`` is not a number); the few checks
    a type cannot express (CIDRs, times) run after decoding and name their field the same way."""
    try:
        body = msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise BodyError(message, path or None) from None  # no path: about the body as a whole
    try:
        if isinstance(body.allowed_ips, list):
            validate_cidrs(body.allowed_ips)
    except ValueError as exc:
        raise BodyError(str(exc), "allowed_ips") from None
    try:
        if isinstance(body.expires_at, str | float):
            body.expires_at = parse_time(body.expires_at)
    except ValueError as exc:
        raise BodyError(str(exc), "expires_at") from None
    return body


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: _Name
    budget_usd: _Budget | None = None
    # Globs; absent means every model (["*"]), [] means none.
    models: list[str] = msgspec.field(default_factory=lambda: [ALL_MODELS])
    allowed_ips: list[str] = msgspec.field(default_factory=list)
    rpm: _AtLeastOne | None = None
    tpm: _AtLeastOne | None = None
    max_concurrent: _AtLeastOne | None = None
    expires_at: str | float | None = None  # epoch seconds once parsed


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Absent fields are UNSET and stay as they are; an explicit JSON null clears a field."""

    name: _Name | UnsetType = UNSET
    budget_usd: _Budget | None | UnsetType = UNSET
    models: list[str] | UnsetType = UNSET  # no null: ["*"] is every model, [] none
    allowed_ips: list[str] | None | UnsetType = UNSET
    rpm: _AtLeastOne | None | UnsetType = UNSET
    tpm: _AtLeastOne | None | UnsetType = UNSET
    max_concurrent: _AtLeastOne | None | UnsetType = UNSET
    expires_at: str | float | None | UnsetType = UNSET
    disabled: bool | None | UnsetType = UNSET
    reset_spent: bool = False

    def changes(self) -> KeyChanges:
        budget = _value(self.budget_usd)
        expires = _value(self.expires_at)
        rpm, tpm, concurrent = _value(self.rpm), _value(self.tpm), _value(self.max_concurrent)
        return KeyChanges(
            name=_value(self.name),
            budget_micro=None if budget is None else round(budget * 1e6),
            clear_budget=self.budget_usd is None,
            expires_at=float(expires) if expires is not None else None,
            clear_expiry=self.expires_at is None,
            allowed_models=_value(self.models),
            allowed_ips=_value(self.allowed_ips),
            rpm=rpm,
            clear_rpm=self.rpm is None,
            tpm=tpm,
            clear_tpm=self.tpm is None,
            max_concurrent=concurrent,
            clear_max_concurrent=self.max_concurrent is None,
            disabled=_value(self.disabled),
            reset_spent=self.reset_spent,
        )


_T = TypeVar("_T")


def _value(field: _T | UnsetType) -> _T | None:
    return None if isinstance(field, UnsetType) else field
