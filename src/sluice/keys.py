"""Sluice API keys: generation, hashing, and the checks a key imposes on a request."""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL_MODELS", "KeyRecord", "generate_key", "hash_key", "key_prefix", "looks_like_key"]

# A key's ``allowed_models`` are globs; this one allows every model. It is written explicitly
# (the default for a new key): an empty list allows no model at all (migration 0003).
ALL_MODELS = "*"

_KEY_PREFIX = "sk-"
_SECRET_CHARS = 48
_VISIBLE_PREFIX = 8


def generate_key() -> str:
    """``sk-`` plus 48 URL-safe random characters (288 bits)."""
    return _KEY_PREFIX + secrets.token_urlsafe(36)[:_SECRET_CHARS]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str:
    return key[:_VISIBLE_PREFIX]


def looks_like_key(candidate: str) -> bool:
    return candidate.startswith(_KEY_PREFIX) and 8 < len(candidate) <= 200


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    prefix: str
    budget_micro: int | None
    spent_micro: int
    expires_at: float | None
    allowed_models: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    disabled: bool
    created_at: float
    last_used_at: float | None
    max_concurrent: int | None = None  # requests in flight at once; None = unlimited
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), compare=False, repr=False
    )

    @classmethod
    def build(cls, **values: Any) -> KeyRecord:
        ips = tuple(values.get("allowed_ips") or ())
        networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in ips)
        values["allowed_ips"] = ips
        values["allowed_models"] = tuple(values.get("allowed_models") or ())
        return cls(**values, _networks=networks)

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def allows_model(self, model: str) -> bool:
        if ALL_MODELS in self.allowed_models:
            return True
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.allowed_models)

    def allows_ip(self, client_ip: str | None) -> bool:
        if not self._networks:
            return True
        if client_ip is None:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def public_view(self) -> dict[str, Any]:
        """What the admin API and CLI show: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "budget_usd": None if self.budget_micro is None else self.budget_micro / 1_000_000,
            "spent_usd": self.spent_micro / 1_000_000,
            "expires_at": self.expires_at,
            "allowed_models": list(self.allowed_models),
            "allowed_ips": list(self.allowed_ips),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrent": self.max_concurrent,
            "disabled": self.disabled,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }
