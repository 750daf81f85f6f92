"""The database's clock, which heartbeats are written and compared with."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection


def db_now():
    """The database's clock. Heartbeats are written with it (`Now()`) and the reaper compares with it, so a
    host whose clock runs ahead or behind never reaps a live run. (SQLite: the local clock; it is one host.)"""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")  # as Now(); CURRENT_TIMESTAMP is the transaction's start
        return cursor.fetchone()[0]
