"""Authentication of API requests (django-ninja calls `authenticate` through ninja_api.api_auth) and token sessions.

`Authorization: Bearer <token>` (a per-user API token) or the browser's session. Token requests are
exempt from CSRF (no ambient credential); session-authenticated unsafe requests must pass Django's CSRF
check. Token requests get their own server-side session (for the rating tokens of webapp.ratings.tokens),
kept under the token row and never sent as a cookie."""

from __future__ import annotations

from contextlib import contextmanager
from importlib import import_module

from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware

from webapp.api.errors import ApiError
from webapp.api.models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _token_from(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        raise ApiError(401, "Use 'Authorization: Bearer <token>'.", "bad_authorization_header")
    return value.strip()


def _csrf_failure(request: HttpRequest) -> str | None:
    check = CsrfViewMiddleware(lambda r: None)
    check.process_request(request)
    rejected = check.process_view(request, None, (), {})
    return None if rejected is None else "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken."


def authenticate(request: HttpRequest) -> ApiToken | None:
    """Sets request.user; returns the token row for token requests. Raises ApiError(401/403)."""
    token = _token_from(request)
    if token is not None:
        row = ApiToken.objects.authenticate(token)
        if row is None:
            raise ApiError(401, "Invalid or revoked token.", "invalid_token")
        request.user = row.user
        return row
    if not request.user.is_authenticated:
        raise ApiError(401, "Authentication required: send 'Authorization: Bearer <token>'.")
    if request.method not in SAFE_METHODS:
        reason = _csrf_failure(request)
        if reason:
            raise ApiError(403, reason, "csrf_failed")
    return None


def _token_session(row: ApiToken):
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return store(session_key=row.session_key or None)


@contextmanager
def token_session(request: HttpRequest):
    """For a token request, its own server-side session (kept under the token row, never a cookie) in place
    of the browser's while the block runs (the rating tokens of webapp.ratings.tokens live there)."""
    row = getattr(request, "api_token_row", None)
    if row is None:
        yield
        return
    browser_session = request.session
    request.session = _token_session(row)
    try:
        yield
        if request.session.modified:
            request.session.save()
            if request.session.session_key != row.session_key:
                ApiToken.objects.filter(pk=row.pk).update(session_key=request.session.session_key)
    finally:
        request.session = browser_session
