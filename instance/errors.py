"""The one error type the API raises; handlers render it as {"error", "detail", ...}."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """``error`` is a stable machine-readable code, ``detail`` a sentence for a person."""

    def __init__(self, status: int, error: str, detail: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}  # sent with the answer (Retry-After, …)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist or you may not see it")


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "forbidden", detail)


def invalid(detail: str, **extra: Any) -> ApiError:
    return ApiError(422, "invalid", detail, **extra)


def conflict(detail: str, **extra: Any) -> ApiError:
    return ApiError(409, "conflict", detail, **extra)
