"""API errors: each has a stable ``error_id`` (what clients and tests match on), the HTTP status
and Kazoo's error envelope fields. Raise them anywhere under a responder; the app turns them
into ``{"status": "error", "error": "<code>", "error_id": ..., "message": ..., "data": ...}``."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidJson",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
]


class ApiError(Exception):
    status: int = 500
    error_id: str = "internal_error"
    default_message: str = "internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        error_id: str | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if error_id is not None:
            self.error_id = error_id
        self.data = data
        self.headers = headers or {}
        super().__init__(f"{self.status} {self.error_id}: {self.message}")


class BadRequest(ApiError):
    status = 400
    error_id = "bad_request"
    default_message = "bad request"


class InvalidJson(BadRequest):
    error_id = "invalid_json"
    default_message = "the request body is not valid JSON"


class ValidationError(BadRequest):
    """Field errors in Kazoo's shape: ``{"sip.username": {"minLength": {"message": ...}}}``."""

    error_id = "validation_failed"
    default_message = "validation failed"

    def __init__(self, errors: dict[str, dict[str, dict[str, Any]]], message: str | None = None) -> None:
        self.errors = errors
        super().__init__(message, data=errors)


class Unauthorized(ApiError):
    status = 401
    error_id = "unauthorized"
    default_message = "invalid or missing credentials"


class Forbidden(ApiError):
    status = 403
    error_id = "forbidden"
    default_message = "the token does not reach this resource"


class NotFound(ApiError):
    status = 404
    error_id = "not_found"
    default_message = "bad identifier"


class MethodNotAllowed(ApiError):
    status = 405
    error_id = "method_not_allowed"
    default_message = "method not allowed on this resource"


class NotAcceptable(ApiError):
    status = 406
    error_id = "not_acceptable"
    default_message = "the resource cannot be given in a format the request accepts"


class Conflict(ApiError):
    status = 409
    error_id = "conflict"
    default_message = "the document changed: the revision given is not the current one"


class PayloadTooLarge(ApiError):
    status = 413
    error_id = "payload_too_large"
    default_message = "the request body is too large"


class UnsupportedMediaType(ApiError):
    status = 415
    error_id = "unsupported_media_type"
    default_message = "unsupported content type"


class ServiceUnavailable(ApiError):
    status = 503
    error_id = "service_unavailable"
    default_message = "the datastore is unavailable, try again"
