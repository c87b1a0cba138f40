"""One exception tree; every error leaves Sluice as OpenAI-shaped JSON.

Each subclass fixes the HTTP status, the OpenAI ``type`` and a default ``code``; the codes are
documented in docs/errors.md. Raise these anywhere on the request path and the error handler in
``app.py`` renders them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = [
    "SluiceError",
    "InvalidRequest",
    "AuthenticationFailed",
    "PermissionDenied",
    "NotFound",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "RateLimited",
    "ClientClosedRequest",
    "InsufficientQuota",
    "UpstreamBadResponse",
    "NoAvailableChannel",
    "ServiceUnavailable",
    "InternalError",
    "error_body",
]


class SluiceError(Exception):
    """Base of every error Sluice reports to a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type or self.type
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        self.status_override = status

    @property
    def http_status(self) -> int:
        return self.status_override or self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(SluiceError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationFailed(SluiceError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(SluiceError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFound(SluiceError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(SluiceError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(SluiceError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(SluiceError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class ClientClosedRequest(SluiceError):
    """The client went away before its request was read; nobody will see the response."""

    status = 499
    type = "invalid_request_error"
    default_code = "client_closed_request"


class RateLimited(SluiceError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class InsufficientQuota(SluiceError):
    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class UpstreamBadResponse(SluiceError):
    status = 502
    type = "upstream_error"
    default_code = "bad_upstream_response"


class NoAvailableChannel(SluiceError):
    status = 503
    type = "service_unavailable"
    default_code = "no_available_channel"


class ServiceUnavailable(SluiceError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class InternalError(SluiceError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    """Serialize an OpenAI-shaped error without constructing an exception."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )
