"""Asking the broker how many messages wait in a queue (the workers page)."""

from __future__ import annotations

from django.conf import settings

# kombu's Redis transport keeps a queue as a list named after it, plus one list per extra priority step.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_lengths(names: list[str], timeout: float = 0.5) -> dict[str, int | None]:
    """LLEN of each queue's lists; None for every queue when the broker is not Redis or does not answer."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return {}
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(name + suffix)
            counts = pipe.execute()
    except redis.RedisError:
        return {name: None for name in names}
    step = len(PRIORITY_SUFFIXES)
    return {name: sum(counts[i * step:(i + 1) * step]) for i, name in enumerate(names)}
