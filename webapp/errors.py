"""The project's handler for unhandled errors (webapp/urls.py's `handler500`). Django has already logged the
traceback (the `django.request` logger, to stderr: settings.LOGGING) when it calls this.

An error that means the database or the broker is unreachable answers 503 with `Retry-After`; anything else
answers 500. The API's paths answer in its JSON error shape, pages with a short page rendered without a
request: no context processor runs, so nothing here touches the database or the session."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.views.defaults import server_error as page_server_error
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webapp.api.errors import error_response

API_PREFIX = "/api/"
RETRY_AFTER_SECONDS = 30
DATABASE_DOWN = (OperationalError, InterfaceError)
BROKER_DOWN = (BrokerOperationalError, RedisConnectionError, RedisTimeoutError)


def unavailable(exc: BaseException | None) -> str | None:
    """'database' or 'broker' when `exc` (or an exception it was raised from or while handling) says that
    one is unreachable; None otherwise."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DATABASE_DOWN):
            return "database"
        if isinstance(exc, BROKER_DOWN):
            return "broker"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def server_error(request: HttpRequest) -> HttpResponse:
    what = unavailable(sys.exc_info()[1])  # Django calls this while handling the exception
    api = request.path_info.startswith(API_PREFIX)
    if what is None:
        return error_response(500, "Internal server error.") if api else page_server_error(request)
    if api:
        response = error_response(503, f"The {what} is unreachable: retry in {RETRY_AFTER_SECONDS} s.")
    else:
        html = loader.render_to_string("503.html", {"what": what, "retry_after": RETRY_AFTER_SECONDS})
        response = HttpResponse(html, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
