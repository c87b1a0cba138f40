"""Console sessions: a signed cookie every replica accepts, with no server-side store.

The cookie holds who signed in (the operator, or one key by id), until when, and a random
nonce, signed with HMAC-SHA256 under a secret derived from the admin key's hash: every replica
knows that hash, so every replica accepts the cookie, and changing the admin key signs every
session out. The CSRF token of a session is an HMAC of its nonce; it travels in each form (or
the ``x-csrf-token`` header) and is compared in constant time. Signing in also needs a token,
tied to a short-lived pre-session cookie, so another site cannot sign a browser in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import orjson

__all__ = ["Session", "SessionSigner", "COOKIE", "PRE_COOKIE"]

COOKIE = "sluice_console"
PRE_COOKIE = "sluice_console_pre"  # the sign-in form's own CSRF nonce

Role = Literal["admin", "key"]


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    key_id: str | None  # the key holder's key; None for the operator
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, admin_key_hash: str, ttl_s: float) -> None:
        self._secret = hmac.new(
            admin_key_hash.encode(), b"sluice-console-session-v1", hashlib.sha256
        ).digest()
        self.ttl_s = ttl_s

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}:{data}".encode(), hashlib.sha256).digest())

    def issue(
        self, role: Role, key_id: str | None, now: float | None = None
    ) -> tuple[str, Session]:
        """A new session and its cookie value."""
        expires = (time.time() if now is None else now) + self.ttl_s
        session = Session(role, key_id, expires, secrets.token_urlsafe(16))
        payload = _b64(orjson.dumps({"r": role, "k": key_id, "e": expires, "n": session.nonce}))
        return f"{payload}.{self._mac('session', payload)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None (missing, forged, malformed or expired)."""
        if not cookie or "." not in cookie or len(cookie) > 1024:
            return None
        payload, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = orjson.loads(_unb64(payload))
            session = Session(data["r"], data["k"], float(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.role not in ("admin", "key") or session.expires_at <= (now or time.time()):
            return None
        return session

    def csrf_token(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def csrf_valid(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(nonce))
