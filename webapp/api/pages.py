"""The account page where users create and revoke their API tokens (server-rendered, session + CSRF)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from webapp.api.models import ApiToken

MAX_LIVE_TOKENS = 20


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Token name", help_text="What it is for, e.g. 'sweep scripts'.")


@never_cache
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    created = None
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if ApiToken.objects.live().filter(user=request.user).count() >= MAX_LIVE_TOKENS:
            form.add_error(None, f"You have {MAX_LIVE_TOKENS} live tokens: revoke one first.")
        else:
            row, created = ApiToken.issue(request.user, form.cleaned_data["name"])
            form = TokenForm()
    return render(request, "api/tokens.html", {
        "form": form, "created": created, "tokens": ApiToken.objects.filter(user=request.user)})


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    row = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
        messages.info(request, f"Revoked {row}.")
    return redirect("api:tokens")
