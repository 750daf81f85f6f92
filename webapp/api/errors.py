"""Every API error has one shape: {"error": {"code": ..., "message": ..., "fields": {...}}}.
`fields` (field name -> list of messages) is present only on validation errors (400). An unhandled error
answers 500 (`server_error`) or, with the database or the broker unreachable, 503 (`unavailable`) with a
`Retry-After` header: see webapp/errors.py."""

from __future__ import annotations

from django.http import JsonResponse

DEFAULT_CODES = {400: "invalid", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "body_too_large",
                 429: "limit_exceeded", 500: "server_error", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, fields: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.fields = status, message, code or DEFAULT_CODES[status], fields


def error_response(status: int, message: str, code: str | None = None, fields: dict | None = None) -> JsonResponse:
    body = {"code": code or DEFAULT_CODES.get(status, "error"), "message": message}
    if fields is not None:
        body["fields"] = fields
    response = JsonResponse({"error": body}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="ptlab"'
    return response


def not_found(what: str = "object") -> ApiError:
    return ApiError(404, f"No such {what}.")
