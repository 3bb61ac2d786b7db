"""The error catalogue (docs/architecture.md, "API"): one exception type, ``ApiError``, carries
code, HTTP status and details; and the service families of the exception tree (``AuthError``,
``IngestError``, ``StreamError``). The whole tree, under ``PricecastError``, is in ml/errors.py."""

from __future__ import annotations

from typing import Any

from ml.errors import PricecastError

# code -> (HTTP status, default message)
CATALOG: dict[str, tuple[int, str]] = {
    "ERR_AUTH_001": (401, "Invalid or expired access token"),
    "ERR_AUTH_002": (403, "Token lacks the required scope"),
    "ERR_AUTH_003": (401, "Refresh token reused or revoked"),
    "ERR_PRED_001": (422, "Insufficient history"),
    "ERR_PRED_002": (404, "Unknown symbol"),
    "ERR_PRED_003": (503, "Prediction could not be generated"),
    "ERR_RATE_001": (429, "Rate limit exceeded"),
    "ERR_VAL_001": (422, "Invalid request parameters"),
    "ERR_DB_001": (503, "Database unavailable"),
    "ERR_EXT_001": (504, "Upstream price API timeout"),
    "ERR_EXT_003": (429, "Upstream price API quota exceeded"),
}


class ApiError(PricecastError):
    """An error of the catalogue above: its code, HTTP status, message and details (the API's
    error body)."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        status, default = CATALOG[code]
        self.code = code
        self.status = status
        self.message = message or default
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def insufficient_history(required_days: int, available_days: int) -> ApiError:
    return ApiError(
        "ERR_PRED_001",
        f"Insufficient history. Required: {required_days} days, Available: {available_days} days",
        {"required_days": required_days, "available_days": available_days},
    )


class AuthError(PricecastError):
    """Authentication cannot go on (see services/api/core/security.py)."""


class IngestError(PricecastError):
    """A tick or an upstream source the ingestion service cannot take."""


class StreamError(PricecastError):
    """A live stream connection, channel or message the stream does not serve."""
