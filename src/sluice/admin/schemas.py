"""Admin request bodies, validated at the edge with pydantic; time parsing shared with the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.storage.key_store import KeyChanges

__all__ = ["KeyCreate", "KeyUpdate", "parse_time", "validate_cidrs"]


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


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0, le=1e9)
    models: list[str] = Field(default_factory=list)
    allowed_ips: list[str] = Field(default_factory=list)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    expires_at: str | float | None = None

    _cidrs = field_validator("allowed_ips")(validate_cidrs)

    @field_validator("expires_at")
    @classmethod
    def _time(cls, value: str | float | None) -> float | None:
        return parse_time(value)


class KeyUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0, le=1e9)
    models: list[str] | None = None
    allowed_ips: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    expires_at: str | float | None = None
    disabled: bool | None = None
    reset_spent: bool = False

    @field_validator("allowed_ips")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else validate_cidrs(value)

    @field_validator("expires_at")
    @classmethod
    def _time(cls, value: str | float | None) -> float | None:
        return parse_time(value)

    def changes(self) -> KeyChanges:
        """Explicit JSON nulls clear a field; absent fields stay as they are."""
        sent = self.model_fields_set
        expires = self.expires_at
        return KeyChanges(
            name=self.name,
            budget_micro=None if self.budget_usd is None else round(self.budget_usd * 1e6),
            clear_budget="budget_usd" in sent and self.budget_usd is None,
            expires_at=float(expires) if expires is not None else None,
            clear_expiry="expires_at" in sent and expires is None,
            allowed_models=self.models,
            allowed_ips=self.allowed_ips,
            rpm=self.rpm,
            clear_rpm="rpm" in sent and self.rpm is None,
            tpm=self.tpm,
            clear_tpm="tpm" in sent and self.tpm is None,
            max_concurrent=self.max_concurrent,
            clear_max_concurrent="max_concurrent" in sent and self.max_concurrent is None,
            disabled=self.disabled,
            reset_spent=self.reset_spent,
        )
