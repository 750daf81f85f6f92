"""Unhandled errors (webapp/errors.py): with the database or the broker unreachable, the API answers 503 in its
JSON error shape and pages a short page, both with Retry-After; every unhandled error's traceback is logged.

The database goes away for real, whatever database the suite runs on: the default connection is pointed at a
PostgreSQL address where nothing answers (a port bound but not listening), or at a real PostgreSQL server through
a proxy that is then cut (a server restarted under an open connection)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import include, path
from kombu.exceptions import OperationalError as BrokerOperationalError

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def closed_port():
    """A local port on which a connection is refused (bound, never listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def database_down(django_db_blocker):
    """The default database is a PostgreSQL server that cannot be reached, for the whole request."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    old = connections["default"]
    with closed_port() as port, django_db_blocker.unblock():
        dead = {**old.settings_dict, "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                "PORT": str(port), "NAME": "ptlab_unreachable", "USER": "postgres", "PASSWORD": "",
                "OPTIONS": {"connect_timeout": 5}, "CONN_MAX_AGE": 0}
        connections["default"] = DatabaseWrapper(dead, "default")
        try:
            yield
        finally:
            connections["default"].close()
            connections["default"] = old


class Proxy:
    """A TCP proxy to a real server: `cut()` closes every connection and stops listening."""

    def __init__(self, host: str, port: int):
        self.target, self.socks = (host, port), []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def cut(self):
        self.listener.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _postgres() -> dict | None:
    """The real PostgreSQL server to connect to: the suite's own, else the local one (its `postgres` database:
    the queries never reach it)."""
    s = connections["default"].settings_dict
    if s["ENGINE"].endswith("postgresql"):
        return {"HOST": s["HOST"] or "127.0.0.1", "PORT": int(s["PORT"] or 5432), "NAME": s["NAME"],
                "USER": s["USER"], "PASSWORD": s["PASSWORD"]}
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return None
    return {"HOST": "127.0.0.1", "PORT": 5432, "NAME": "postgres", "USER": "postgres", "PASSWORD": ""}


@pytest.fixture
def database_restarted(django_db_blocker):
    """The default database is a real PostgreSQL server, connected, whose connection then breaks (and which
    then refuses new ones), like a server restarted under the web server's persistent connection."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    real = _postgres()
    if real is None:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    proxy = Proxy(real["HOST"], real["PORT"])
    old = connections["default"]
    with django_db_blocker.unblock():
        live = {**old.settings_dict, "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                "PORT": str(proxy.port), "NAME": real["NAME"], "USER": real["USER"], "PASSWORD": real["PASSWORD"],
                "OPTIONS": {"connect_timeout": 5}, "CONN_MAX_AGE": None}
        connections["default"] = DatabaseWrapper(live, "default")
        try:
            connections["default"].ensure_connection()
            with connections["default"].cursor() as c:
                c.execute("SELECT 1")
            proxy.cut()
            yield
        finally:
            connections["default"].close()
            connections["default"] = old


@pytest.fixture
def browser():
    """A client that gets Django's error responses (not the exception), with a session cookie: reading the
    logged-in user then needs the database."""
    c = Client(raise_request_exception=False)
    c.cookies["sessionid"] = "a" * 32
    return c


def assert_unavailable_json(response, what: str = "database"):
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"code": "unavailable",
                                         "message": f"The {what} is unreachable: retry in 30 s."}}
    assert response["Retry-After"] == "30"


def assert_unavailable_page(response, what: str = "database"):
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"].startswith("text/html") and response["Retry-After"] == "30"
    body = response.content.decode()
    assert "Temporarily unavailable" in body and f"cannot reach its {what}" in body


def logged_traceback(caplog, exc_name: str) -> bool:
    return any(r.name == "django.request" and r.exc_info and r.exc_info[0].__name__ == exc_name
               for r in caplog.records)


def test_the_api_answers_503_in_its_error_shape(database_down, browser, caplog):
    response = browser.get("/api/experiments", HTTP_AUTHORIZATION="Bearer some-token")
    assert_unavailable_json(response)
    assert logged_traceback(caplog, "OperationalError")
    response = browser.post("/api/experiments", "{}", content_type="application/json")  # the session's user
    assert_unavailable_json(response)


def test_a_broken_connection_is_a_503_too(database_restarted, browser, caplog):
    assert_unavailable_json(browser.get("/api/experiments", HTTP_AUTHORIZATION="Bearer some-token"))
    assert_unavailable_page(browser.get("/"))
    assert logged_traceback(caplog, "OperationalError") or logged_traceback(caplog, "InterfaceError")


def test_pages_answer_a_short_unavailable_page(database_down, browser, caplog):
    for url in ("/", "/workers/", "/admin/"):
        assert_unavailable_page(browser.get(url))
    assert_unavailable_page(browser.post("/accounts/login/", {"username": "a", "password": "b"}))
    assert logged_traceback(caplog, "OperationalError")


# --- errors raised outside views, and by the broker -------------------------------------------------------

class UserMiddleware:
    """Reads the user before the view, like many middlewares do (the session, so the database)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.user.is_authenticated  # noqa: B018
        return self.get_response(request)


def _store_in_session(request):
    request.session["seen"] = True  # saved by SessionMiddleware on the way out: a database write
    return HttpResponse("ok")


def _broker_down(request):
    raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


def _bug(request):
    raise ValueError("a bug")


urlpatterns = [
    path("session/", _store_in_session),
    path("api/session", _store_in_session),
    path("broker/", _broker_down),
    path("api/broker", _broker_down),
    path("bug/", _bug),
    path("api/bug", _bug),
    path("", include("webapp.urls")),
]
handler500 = "webapp.errors.server_error"
here = override_settings(ROOT_URLCONF=__name__)


@here
def test_an_error_raised_in_a_middleware_before_the_view(database_down, browser, caplog):
    with override_settings(MIDDLEWARE=[*django_settings.MIDDLEWARE, f"{__name__}.UserMiddleware"]):
        assert_unavailable_page(browser.get("/accounts/login/"))  # a page that itself needs no database
        assert_unavailable_json(browser.get("/api/"))
    assert logged_traceback(caplog, "OperationalError")


@here
def test_an_error_raised_in_a_middleware_after_the_view(database_down, caplog):
    anonymous = Client(raise_request_exception=False)  # no session cookie: only the session's save needs the database
    assert_unavailable_page(anonymous.get("/session/"))
    assert_unavailable_json(anonymous.get("/api/session"))
    assert logged_traceback(caplog, "OperationalError")


@here
def test_the_broker_unreachable_is_a_503_too(caplog):
    client = Client(raise_request_exception=False)
    assert_unavailable_page(client.get("/broker/"), "broker")
    assert_unavailable_json(client.get("/api/broker"), "broker")
    assert logged_traceback(caplog, "OperationalError")


@here
def test_any_other_error_is_a_500_and_the_api_keeps_its_shape(caplog):
    client = Client(raise_request_exception=False)
    response = client.get("/api/bug")
    assert response.status_code == 500 and "Retry-After" not in response
    assert response.json() == {"error": {"code": "server_error", "message": "Internal server error."}}
    response = client.get("/bug/")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    assert logged_traceback(caplog, "ValueError")


# --- the real settings: DEBUG off, the traceback on stderr ----------------------------------------------

SCRIPT = """
import json, django
django.setup()
from django.test import Client
client = Client(raise_request_exception=False, HTTP_HOST="localhost")
client.cookies["sessionid"] = "a" * 32
out = {}
for url in ("/api/experiments", "/"):
    r = client.get(url)
    out[url] = {"status": r.status_code, "type": r["Content-Type"], "retry": r.get("Retry-After"),
                "body": r.content.decode()}
print(json.dumps(out))
"""


def test_with_debug_off_the_traceback_goes_to_stderr(tmp_path):
    """As deployed (settings read from the environment, DEBUG=0, logging as configured), in a process of its own:
    Django's default logging sends an unhandled error's traceback nowhere with DEBUG off."""
    with closed_port() as port:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PTLAB_", "DJANGO_"))}
        env.update(DJANGO_SETTINGS_MODULE="webapp.settings", DEBUG="0", PTLAB_VAR_DIR=str(tmp_path),
                   SECRET_KEY="a-production-like-secret-key-for-this-test-only",
                   DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/ptlab_unreachable")
        proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    api, page = out["/api/experiments"], out["/"]
    assert api["status"] == 503 and api["type"] == "application/json" and api["retry"] == "30"
    assert json.loads(api["body"])["error"]["code"] == "unavailable"
    assert page["status"] == 503 and page["retry"] == "30" and "Temporarily unavailable" in page["body"]
    for url in out:
        assert f"ERROR django.request: Service Unavailable: {url}\nTraceback (most recent call last):" in proc.stderr
    assert proc.stderr.count("django.db.utils.OperationalError: connection failed") == 2, proc.stderr
