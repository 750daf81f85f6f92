"""The parameters the endpoints share (an id, a page's limit and offset, with their bounds) and the page
they cut from a queryset."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Path, Query

DEFAULT_LIMIT = 100
MAX_LIMIT = {"metrics": 10_000, "samples": 1000, "experiments": 1000}
MAX_INT = 2**31 - 1


def paginate(request: HttpRequest, queryset, limit: int, offset: int) -> tuple[list, dict]:
    count = queryset.count()
    items = list(queryset[offset:offset + limit])
    nxt = None
    if offset + limit < count:
        query = request.GET.copy()
        query["offset"], query["limit"] = str(offset + limit), str(limit)
        nxt = f"{request.path}?{query.urlencode()}"
    return items, {"count": count, "offset": offset, "limit": limit, "next": nxt}


def limit_param(kind: str):
    return Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT[kind], description=f"Page size (at most {MAX_LIMIT[kind]}).")


OFFSET = Query(0, ge=0, le=MAX_INT)
ID = Path(..., alias="id", description="The id (an unknown one, or one not yours: 404).")
