"""The opaque tokens that stand for items in the rating page.

Blindness: the page and its requests carry an item only as a signed token holding a random nonce; the
item itself (which contestant is on which side) stays in the rater's server-side session until the vote
is cast. Nothing the browser holds before the vote tells the two completions' authors apart."""

from __future__ import annotations

import random
import secrets
from dataclasses import asdict

from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.ratings.items import Item
from webapp.ratings.models import RedeemedToken

TOKEN_SALT = "ptlab.ratings.item"
TOKEN_MAX_AGE_S = 7 * 24 * 3600
SESSION_KEY = "ptlab.ratings.pending"
MAX_PENDING = 40  # items shown but not voted on, kept per session (skips, other tabs)


def issue_token(session, experiment_id: int, item: Item) -> str:
    """Remember `item` in the session under a random nonce; the page gets only a signed, opaque token."""
    nonce = secrets.token_urlsafe(12)
    pending = dict(session.get(SESSION_KEY, {}))
    pending[nonce] = {"experiment": experiment_id, **asdict(item)}
    while len(pending) > MAX_PENDING:
        pending.pop(next(iter(pending)))
    session[SESSION_KEY] = pending
    return signing.dumps({"e": experiment_id, "n": nonce}, salt=TOKEN_SALT, compress=False)


def redeem_token(session, experiment_id: int, token: str) -> Item | None:
    """The item a token stands for, removed from the session; None when the token is forged, expired,
    of another experiment or already used."""
    try:
        data = signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE_S)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("e") != experiment_id:
        return None
    pending = dict(session.get(SESSION_KEY, {}))
    nonce = str(data.get("n"))
    entry = pending.pop(nonce, None)
    if entry is None or entry.pop("experiment", None) != experiment_id:
        return None
    session[SESSION_KEY] = pending
    # Sessions are read and saved whole: concurrent requests with one token all find it above. The
    # database decides: exactly one of them inserts the nonce.
    try:
        with transaction.atomic():
            RedeemedToken.objects.create(nonce=nonce[:32])
    except IntegrityError:
        return None
    if random.random() < 0.01:  # now and then, forget nonces whose tokens have expired anyway
        RedeemedToken.objects.filter(created__lt=timezone.now() - timezone.timedelta(seconds=TOKEN_MAX_AGE_S)).delete()
    return Item(**entry)
