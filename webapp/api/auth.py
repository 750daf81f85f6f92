"""Authentication of API requests, and the decorator every endpoint wears.

`Authorization: Bearer <token>` (a per-user API token) or the browser's session. Token requests are
exempt from CSRF (no ambient credential); session-authenticated unsafe requests must pass Django's CSRF
check. Token requests get their own server-side session (for the rating tokens of webapp.ratings.arena),
kept under the token row and never sent as a cookie."""

from __future__ import annotations

import functools
import json
from importlib import import_module

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from training import safejson
from webapp.api.errors import ApiError, error_response
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


def api_view(methods: tuple[str, ...] = ("GET",), auth: bool = True):
    """JSON endpoint: method check, authentication, ApiError -> the error shape."""
    def wrap(view):
        @csrf_exempt
        @functools.wraps(view)
        def inner(request: HttpRequest, *args, **kwargs):
            try:
                if request.method not in methods:
                    response = error_response(405, f"Method {request.method} not allowed.")
                    response["Allow"] = ", ".join(methods)
                    return response
                bad = sorted({k for k, vs in request.GET.lists() for v in [k, *vs] if "\x00" in v})
                if bad:
                    raise ApiError(400, "Query parameters cannot contain NUL characters.",
                                   fields={k: ["Contains a NUL character."] for k in bad})
                row = authenticate(request) if auth else None
                if row is None:
                    return view(request, *args, **kwargs)
                browser_session = request.session
                request.session = _token_session(row)
                try:
                    response = view(request, *args, **kwargs)
                    if request.session.modified:
                        request.session.save()
                        if request.session.session_key != row.session_key:
                            ApiToken.objects.filter(pk=row.pk).update(session_key=request.session.session_key)
                finally:
                    request.session = browser_session
                return response
            except ApiError as e:
                return error_response(e.status, e.message, e.code, e.fields)
            except RequestDataTooBig:
                most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
                return error_response(413, f"The body is larger than {most} bytes (PTLAB_MAX_BODY_BYTES).",
                                      "body_too_large")
            except TooManyFieldsSent:
                most = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
                return error_response(413, f"More than {most} form fields.", "body_too_large")
        return inner
    return wrap


def json_body(request: HttpRequest) -> dict:
    """The request body as a JSON object (form-encoded bodies are accepted too)."""
    if request.content_type == "application/json" or (request.body[:1] in (b"{", b"[")
                                                      and request.content_type != "multipart/form-data"):
        try:
            data = safejson.loads(request.body.decode("utf-8") or "{}", max_depth=settings.PTLAB_MAX_JSON_DEPTH,
                                 text_checks=False)  # NUL, surrogates: the form's field errors
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, f"The body is not valid JSON: {e}", "invalid_json") from e
        except safejson.JSONLimitError as e:
            raise ApiError(400, f"The body is not accepted: {e}", "invalid_json") from e
        if not isinstance(data, dict):
            raise ApiError(400, "The body must be a JSON object.", "invalid_json")
        return data
    return {k: v if len(v) > 1 else v[0] for k, v in request.POST.lists()}


def ok(data, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False)
