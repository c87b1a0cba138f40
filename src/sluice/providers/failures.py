"""Shared classification of upstream HTTP errors into ``UpstreamFailure``.

Provider modules extract the provider's message and code from its error body and call
``classify``; the rules for what the client sees live here once.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping

from sluice.core import FailureKind, UpstreamFailure

__all__ = [
    "classify",
    "parse_retry_after",
    "redact_secrets",
    "response_too_large",
    "stream_error",
    "stream_truncated",
]

_KEYLIKE = re.compile(r"(sk|key|pk|rk|AIza)[-_A-Za-z0-9]{12,}")
# The operator's account at the provider: OpenAI names its organisation (``org-…``) and project
# (``proj_…``) in quota and rate-limit messages. Tenants must not learn them.
_ACCOUNT_ID = re.compile(r"(?<![A-Za-z0-9])(?:org|proj)[-_][A-Za-z0-9][-_A-Za-z0-9]{3,}")
_MAX_MESSAGE = 500


def redact_secrets(message: str, secret: str = "") -> str:
    """An upstream's message made safe for a tenant: the channel's own key (``secret``, whatever
    its shape), anything shaped like an API key and the operator's account ids are masked.

    Every path that shows a tenant an upstream's words goes through here (non-stream error
    bodies, mid-stream error events, the Anthropic dialect's errors). The message is cut to
    its final length only after masking, so a key at the cut cannot leave half unmasked.
    """
    if secret:
        message = message.replace(secret, "[redacted]")
    message = _ACCOUNT_ID.sub("[redacted]", _KEYLIKE.sub("[redacted]", message))
    return message[:_MAX_MESSAGE]


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def response_too_large(what: str, limit: int) -> UpstreamFailure:
    """An upstream answer past Sluice's size cap (``limits.max_upstream_*``).

    Kind ``client``: a tenant can provoke a large answer (``n``, ``max_tokens``, a big
    embeddings batch), so it must neither count against the channel's breakers (shared state)
    nor be retried on another channel, which would only pay for the same answer again.
    """
    return UpstreamFailure(
        status=502,
        kind="client",
        message=f"The upstream {what} exceeded the gateway's limit of {limit} bytes.",
        code="upstream_response_too_large",
    )


def stream_truncated() -> UpstreamFailure:
    """An upstream stream that ended before its last event (every translator's verdict)."""
    return UpstreamFailure(
        status=502,
        kind="bad_response",
        message="The upstream stream ended before it was complete.",
        code="upstream_stream_truncated",
    )


def stream_error(message: str | None, code: str | None, secret: str = "") -> UpstreamFailure:
    """An error event in an upstream stream, its text redacted of the channel's key."""
    text = redact_secrets(message or "unknown error", secret)
    return UpstreamFailure(
        status=502,
        kind="server",
        message=f"Upstream error during stream: {text}",
        code=code or "upstream_stream_error",
    )


_CLIENT_STATUSES = {400, 404, 413, 415, 422}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}


def classify(
    status: int,
    headers: Mapping[str, str],
    *,
    message: str | None,
    code: str | None = None,
    param: str | None = None,
    provider_type: str | None = None,
    secret: str = "",
) -> UpstreamFailure:
    """``secret``: the channel's key, masked wherever the upstream echoes it."""
    retry_after = parse_retry_after(headers)
    text = redact_secrets(message or f"upstream returned HTTP {status}", secret)
    kind: FailureKind
    if status in _CLIENT_STATUSES:
        return UpstreamFailure(
            status=400 if status == 422 else status,
            kind="client",
            message=text,
            type=provider_type or "invalid_request_error",
            code=code,
            param=param,
            upstream_status=status,
        )
    if status in (401, 403):
        # Never relay the upstream's words: they can name the upstream account or key. Nor
        # claim the channel is dead: a 403 may concern only this model (see health_probe).
        return UpstreamFailure(
            status=502,
            kind="auth",
            message="The upstream refused this request with the channel's credentials (it may "
            "not allow this model). Try again later or with another model.",
            code="upstream_auth_failed",
            upstream_status=status,
        )
    if status == 402 or (status == 429 and code in _QUOTA_CODES):
        return UpstreamFailure(
            status=502,
            kind="billing",
            message="The upstream channel's account cannot be billed for this request. Try "
            "again later or with a smaller request (max_tokens).",
            code="upstream_billing_error",
            upstream_status=status,
        )
    if status == 429:
        kind, out_status, out_code = "rate_limit", 429, "upstream_rate_limited"
    elif status == 529:
        kind, out_status, out_code = "overloaded", 503, "upstream_overloaded"
    elif status in (408, 504):
        kind, out_status, out_code = "timeout", 504, "upstream_timeout"
    else:
        kind, out_status, out_code = "server", 502, "upstream_error"
    return UpstreamFailure(
        status=out_status,
        kind=kind,
        message=f"Upstream error (HTTP {status}): {text}",
        type="rate_limit_error" if kind == "rate_limit" else "upstream_error",
        code=out_code,
        retry_after_s=retry_after,
        upstream_status=status,
    )
