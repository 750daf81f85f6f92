import functools

from django.urls import URLPattern, include, path, re_path

from webapp.api import openapi, pages
from webapp.api.errors import error_response
from webapp.api.ninja_api import api

# Each of these adds its operations to `api`: imported in this order, the schema lists them in it.
from webapp.api import experiments, sweeps, runs, ratings, reports, rounds, judging  # noqa: F401  # isort: skip


def _json_405(view):
    """django-ninja answers a method it has no operation for with a plain 405: give it the error shape."""
    @functools.wraps(view)
    def inner(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
            shaped = error_response(405, f"Method {request.method} not allowed.")
            shaped["Allow"] = response.get("Allow", "")
            return shaped
        return response
    inner.csrf_exempt = True
    return inner


def _endpoints() -> list[URLPattern]:
    """The API's operations, as django-ninja routes them, under this app's namespace ("api:...")."""
    found = []
    for p in api.urls[0]:
        if isinstance(p, URLPattern) and p.name not in (None, "api-root"):
            found.append(URLPattern(p.pattern, _json_405(p.callback), p.default_args, p.name))
    return found


app_name = "api"
urlpatterns = [
    path("accounts/tokens/", pages.tokens, name="tokens"),
    path("accounts/tokens/<int:pk>/revoke/", pages.token_revoke, name="token_revoke"),
    path("api/openapi.json", openapi.openapi, name="schema"),
    path("api/docs/", openapi.docs, name="docs"),
]
urlpatterns += [
    path("api/", include(_endpoints())),
    re_path(r"^api/(?P<rest>.*)$", openapi.not_found_view),
]
