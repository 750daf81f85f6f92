"""Django settings for ptlab. Everything that differs between a laptop and production comes from
the environment; the defaults run on a laptop with nothing installed (SQLite, the embedded Redis
that `make run` starts on port 6390).

Production: DEBUG=0 SECRET_KEY=... ALLOWED_HOSTS=ptlab.example.org
            DATABASE_URL=postgres://user@db-host/ptlab CELERY_BROKER_URL=redis://redis-host:6379/0
            PTLAB_ARTIFACT_ROOT=/shared/ptlab   (the same path on the web host and every worker)
"""

import os
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PTLAB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None or value == "" else value.strip().lower() in ("1", "true", "yes", "on")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if not value else float(value)


DEBUG = env_bool("DEBUG", False)
# The fallback key is for laptops only; `manage.py check --deploy` flags it (security.W009).
SECRET_KEY = os.environ.get("SECRET_KEY") or "django-insecure-ptlab-development-key-do-not-use-in-production"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "webapp.experiments",
    "webapp.datasets",
    "webapp.ratings",
    "webapp.compare",
    "webapp.reports",
    "webapp.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database: DATABASE_URL (PostgreSQL in production), else a SQLite file under var/ -------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}", conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write at the same time: WAL lets readers run during a write,
    # IMMEDIATE transactions and a timeout make writers queue instead of failing with "locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: the integration tests' worker processes must see the test database. One per
    # test process, so that two test sessions on one machine never share (and delete) each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"ptlab-test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "experiments:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- static files: served by WhiteNoise straight from static/ (no collectstatic needed) ----------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"  # `collectstatic` target; exists so WhiteNoise does not warn
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- artifacts: run folders (checkpoints, final model) and uploaded datasets ---------------------
ARTIFACT_ROOT = Path(os.environ.get("PTLAB_ARTIFACT_ROOT", VAR_DIR / "artifacts")).resolve()
MEDIA_ROOT = ARTIFACT_ROOT  # uploads land in ARTIFACT_ROOT/datasets/; never served over HTTP
FILE_UPLOAD_PERMISSIONS = 0o644

# --- Celery ----------------------------------------------------------------------------------------
# The default is the embedded Redis of `make run`, on a port of its own (never 6379).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6390/0")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "train"
CELERY_TASK_IGNORE_RESULT = True  # run state lives in the Run table, not in a result backend
# Ack on receipt: a long run is never redelivered when it outlives the broker's visibility_timeout.
# A worker that dies mid-run is handled by the reaper (heartbeats in the database), not by redelivery.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Take a message only when the process is free: a busy worker must not hold the next run back
# from an idle one (Redis brokers only; Celery ignores it elsewhere with a warning).
CELERY_WORKER_DISABLE_PREFETCH = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# The pool's child lives on; each run is trained in a process it forks for that run (GPU memory and all
# that torch allocated go back when the run ends): webapp/experiments/fresh_process.py. Never recycle the
# child (max_tasks_per_child): Celery's pool could then lose a job that arrived as a run ended.
CELERY_WORKER_MAX_TASKS_PER_CHILD = None
# Celery's prefork pool, replacing a child that was killed (a forced cancel) without waiting for its 5 s
# periodic check (webapp/experiments/prefork.py). `-P prefork` selects it too.
CELERY_WORKER_POOL = "webapp.experiments.prefork:TaskPool"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- run execution (seconds) -----------------------------------------------------------------------
PTLAB_HEARTBEAT_SECONDS = env_float("PTLAB_HEARTBEAT_SECONDS", 10)  # run + worker heartbeats
PTLAB_REAP_AFTER_SECONDS = env_float("PTLAB_REAP_AFTER_SECONDS", 60)  # a running run this silent is orphaned
PTLAB_MAX_ATTEMPTS = int(env_float("PTLAB_MAX_ATTEMPTS", 3))  # starts of a run before it is failed
PTLAB_RESEND_AFTER_SECONDS = env_float("PTLAB_RESEND_AFTER_SECONDS", 60)  # queued, no message: send again
PTLAB_CANCEL_GRACE_SECONDS = env_float("PTLAB_CANCEL_GRACE_SECONDS", 60)  # clean stop, then kill
PTLAB_PRELOAD_TRAINING = env_bool("PTLAB_PRELOAD_TRAINING", True)  # import torch/TRL before forking runs
PTLAB_WORKER_STALE_SECONDS = env_float("PTLAB_WORKER_STALE_SECONDS", 3 * PTLAB_HEARTBEAT_SECONDS)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"webapp": {"handlers": ["console"], "level": os.environ.get("PTLAB_LOG_LEVEL", "INFO")}},
}
