"""The Content-Security-Policy header (settings.PTLAB_CSP) on every response: pages load scripts only from
this site's static files, never inline, and talk to nothing but this site."""

from __future__ import annotations

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.PTLAB_CSP:
            response.headers.setdefault("Content-Security-Policy", settings.PTLAB_CSP)
        return response
