"""Who may read ``/metrics`` and the details of ``/readyz``: they name channels, models, costs
and upstream errors, which a tenant (or anyone) must not see.

With ``metrics_token`` set, a caller must send ``Authorization: Bearer <token>`` (compared in
constant time; wrong tokens count as failed authentications of the caller's address, like wrong
admin keys). Without it, only local requests may: the peer is a loopback address *and* the
request carries no forwarding header, so a reverse proxy on the same host (which adds
``X-Forwarded-For``) never lends its loopback address to the internet. ``make run`` on a laptop
keeps working; an exposed instance shows nothing until a token is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from starlette.requests import Request

from sluice.errors import AuthenticationFailed, PermissionDenied, SluiceError
from sluice.relay.http import client_ip
from sluice.settings import Secret
from sluice.state import AppState

__all__ = ["authorize_observer", "may_observe", "is_local_request"]

_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def is_local_request(request: Request) -> bool:
    """A loopback peer that forwards nobody else's request."""
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    address = client_ip(request)
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback
    return parsed.is_loopback


def _token_matches(presented: str, expected: Secret) -> bool:
    # Digests first: equal lengths, so the comparison's time says nothing about the token.
    given = hashlib.sha256(presented.encode()).digest()
    wanted = hashlib.sha256(expected.get_secret_value().encode()).digest()
    return hmac.compare_digest(given, wanted)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authorize_observer(request: Request, state: AppState) -> None:
    """Raise unless the caller may read metrics and readiness details."""
    expected = state.settings.metrics_token
    if not expected:
        if is_local_request(request):
            return
        raise PermissionDenied(
            "Metrics are served only to local requests until 'metrics_token' is configured.",
            code="metrics_token_required",
        )
    address = client_ip(request)
    state.admin_throttle.check(address)
    presented = _bearer(request)
    if presented is None:
        raise AuthenticationFailed(
            "This route needs 'Authorization: Bearer <metrics token>'.",
            code="invalid_metrics_token",
        )
    if not _token_matches(presented, expected):
        state.admin_throttle.record_failure(address)
        raise AuthenticationFailed("Incorrect metrics token.", code="invalid_metrics_token")


def may_observe(request: Request, state: AppState) -> bool:
    """``authorize_observer`` as a yes/no (``/readyz`` answers either way, with or without
    details)."""
    try:
        authorize_observer(request, state)
    except SluiceError:
        return False
    return True
