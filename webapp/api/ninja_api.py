"""The REST API, on django-ninja: the one NinjaAPI object every endpoint module adds its operations to
(experiments.py, sweeps.py, runs.py, ratings.py, reports.py, rounds.py), with its root, its body parser, its
authentication and its error handlers. The endpoints are thin, like the pages: access checks in them (the same
querysets, 404 for what one may not see), validation in the experiments form, writes in the apps' `do_*`
actions, numbers from webapp.ratings. Each endpoint declares its input and output types (schemas.py);
requests are validated with them and /api/openapi.json is generated from them (openapi.py). Errors keep one
shape (errors.py)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest
from django.urls import reverse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser

from training import safejson
from webapp.api import schemas
from webapp.api.auth import authenticate
from webapp.api.errors import ApiError, error_response

DESCRIPTION = ("Script ptlab experiments. Authenticate with `Authorization: Bearer <token>` (create tokens under "
               "your account: /accounts/tokens/). Errors: `{\"error\": {\"code\", \"message\", \"fields\"}}`.")


class SafeParser(Parser):
    """Request bodies with the bounds of training.safejson (depth, number sizes); NUL characters and
    surrogates are left to the form, which reports them by field."""

    def parse_body(self, request: HttpRequest):
        return safejson.loads(request.body.decode("utf-8"), max_depth=settings.PTLAB_MAX_JSON_DEPTH,
                              text_checks=False)


def api_auth(request: HttpRequest):
    """A token (Bearer) or the browser's session (with CSRF for writes); ApiError 401/403 otherwise."""
    bad = sorted({k for k, vs in request.GET.lists() for v in [k, *vs] if "\x00" in v})
    if bad:
        raise ApiError(400, "Query parameters cannot contain NUL characters.",
                       fields={k: ["Contains a NUL character."] for k in bad})
    request.api_token_row = authenticate(request)
    return request.user


api = NinjaAPI(title="ptlab API", version="1", description=DESCRIPTION, auth=api_auth, parser=SafeParser(),
               urls_namespace="api", docs_url=None, openapi_url=None)
ERRORS = {401: schemas.Error, 404: schemas.Error, 405: schemas.Error, 503: schemas.Error}  # 503: handler500
BAD = {400: schemas.Error, **ERRORS}


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return error_response(exc.status, exc.message, exc.code, exc.fields)


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    fields: dict[str, list[str]] = {}
    whole_body = False
    for err in exc.errors:
        loc = [str(x) for x in err.get("loc", ())]
        if loc[:1] == ["body"] and len(loc) <= 2:
            whole_body = True
        # A nested object's field by its path (`sweep.trials`); a list's items by the list's name.
        path = ".".join(str(x) for x in err.get("loc", ())[2:] if not isinstance(x, int))
        name = (path or "body") if loc[:1] == ["body"] else (loc[1] if len(loc) > 1 else "query")
        fields.setdefault(name, []).append(str(err.get("msg", "Invalid value.")))
    if whole_body:
        return error_response(400, "The body must be a JSON object.", "invalid_json")
    body = any(str(err.get("loc", ("",))[0]) == "body" for err in exc.errors)
    if body:
        return error_response(400, "The request is not valid.", "validation_error", fields)
    return error_response(400, "Invalid query parameters.", "invalid", fields)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None:
        return error_response(400, f"The body is not valid JSON: {cause}", "invalid_json")
    return error_response(exc.status_code, str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(413, f"The body is larger than {most} bytes (PTLAB_MAX_BODY_BYTES).", "body_too_large")


@api.exception_handler(TooManyFieldsSent)
def _too_many(request, exc):
    return error_response(413, f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields.", "body_too_large")


# --- index -------------------------------------------------------------------------------------------

@api.get("/", auth=None, response=schemas.Index, url_name="index", operation_id="index", by_alias=True,
         summary="Links to the schema, the docs and the collections", tags=["index"])
def index(request: HttpRequest):
    return {"schema": reverse("api:schema"), "docs": reverse("api:docs"),
            "experiments": reverse("api:experiments"), "tokens": reverse("api:tokens")}
