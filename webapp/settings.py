"""Django settings for ptlab. Everything that differs between a laptop and production comes from
the environment; the defaults run on a laptop with nothing installed (SQLite, the embedded Redis
that `make run` starts on port 6390).

Production: DEBUG=0 SECRET_KEY=... ALLOWED_HOSTS=ptlab.example.org
            DATABASE_URL=postgres://user@db-host/ptlab CELERY_BROKER_URL=redis://redis-host:6379/0
            PTLAB_ARTIFACT_ROOT=/shared/ptlab   (the same path on the web host and every worker)
"""

import os
import sys
import tempfile
from pathlib import Path

import dj_database_url
from django.utils.log import DEFAULT_LOGGING

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PTLAB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None or value == "" else value.strip().lower() in ("1", "true", "yes", "on")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if not value else float(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


class ImproperlyConfiguredError(RuntimeError):
    """Refuse to start: a setting would make the app unsafe (see the README, "Production")."""


DEBUG = env_bool("DEBUG", False)
if "pytest" in sys.modules:  # the test suite, and the worker processes it starts (they inherit the environment)
    os.environ.setdefault("PTLAB_ALLOW_DEV_KEY", "1")
DEVELOPMENT_SECRET_KEY = "django-insecure-ptlab-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
# The development key signs sessions and rating tokens anyone can forge: only a DEBUG laptop may use it
# (tests run with PTLAB_ALLOW_DEV_KEY=1; `make run` and the test runner set DEBUG or that).
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not DEBUG and not env_bool("PTLAB_ALLOW_DEV_KEY", False):
    raise ImproperlyConfiguredError("DEBUG is off and SECRET_KEY is unset: set SECRET_KEY (a long random string) "
                                    "in production, or DEBUG=1 on a development machine.")
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
    "webapp.workers",
    "webapp.datasets",
    "webapp.ratings",
    "webapp.compare",
    "webapp.reports",
    "webapp.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.csp.ContentSecurityPolicyMiddleware",
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
# Report imports (and other file work) go to this CPU-light queue, served by its own worker so that a training
# run of hours never holds them up (`make run` starts one).
PTLAB_IO_QUEUE = os.environ.get("PTLAB_IO_QUEUE", "io")
# A background job (an io job, a judge job) still queued this long while its queue is empty in the broker (its
# message was lost, or the broker was down when it was made) is sent again by the workers serving that queue; a
# running one silent for PTLAB_REAP_AFTER_SECONDS (its worker died) is too, up to PTLAB_MAX_ATTEMPTS starts
# (webapp/experiments/jobs.py).
PTLAB_JOB_RESEND_SECONDS = env_float("PTLAB_JOB_RESEND_SECONDS", 60)
CELERY_TASK_IGNORE_RESULT = True  # run state lives in the Run table, not in a result backend
# Ack on receipt: a long run is never redelivered when it outlives the broker's visibility_timeout.
# A worker that dies mid-run is handled by the reaper (heartbeats in the database), not by redelivery.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Take a message only when the process is free: a busy worker must not hold the next run back
# from an idle one (Redis brokers only; Celery ignores it elsewhere with a warning).
CELERY_WORKER_DISABLE_PREFETCH = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# The pool's child lives on; each run is trained in a process it forks for that run (GPU memory and all
# that torch allocated go back when the run ends): webapp/workers/fresh_process.py. Never recycle the
# child (max_tasks_per_child): Celery's pool could then lose a job that arrived as a run ended.
CELERY_WORKER_MAX_TASKS_PER_CHILD = None
# Celery's prefork pool, replacing a child that was killed (a forced cancel) without waiting for its 5 s
# periodic check (webapp/workers/prefork.py). `-P prefork` selects it too.
CELERY_WORKER_POOL = "webapp.workers.prefork:TaskPool"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- run execution (seconds) -----------------------------------------------------------------------
PTLAB_HEARTBEAT_SECONDS = env_float("PTLAB_HEARTBEAT_SECONDS", 10)  # run + worker heartbeats
PTLAB_REAP_AFTER_SECONDS = env_float("PTLAB_REAP_AFTER_SECONDS", 60)  # a running run this silent is orphaned
PTLAB_MAX_ATTEMPTS = int(env_float("PTLAB_MAX_ATTEMPTS", 3))  # starts of a run (or an io job) before it fails
PTLAB_RESEND_AFTER_SECONDS = env_float("PTLAB_RESEND_AFTER_SECONDS", 60)  # queued, no message: send again
PTLAB_CANCEL_GRACE_SECONDS = env_float("PTLAB_CANCEL_GRACE_SECONDS", 60)  # clean stop, then kill
PTLAB_WATCH_SECONDS = env_float("PTLAB_WATCH_SECONDS", 2)  # the worker looks at its run's process this often
PTLAB_HUNG_AFTER_SECONDS = env_float("PTLAB_HUNG_AFTER_SECONDS", 1800)  # no write this long: killed, requeued
PTLAB_PRELOAD_TRAINING = env_bool("PTLAB_PRELOAD_TRAINING", True)  # import torch/TRL before forking runs
PTLAB_WORKER_STALE_SECONDS = env_float("PTLAB_WORKER_STALE_SECONDS", 3 * PTLAB_HEARTBEAT_SECONDS)
# A run with num_processes > 1 is started by its worker with `accelerate launch`: DDP unless this accelerate
# config file (the administrator's: FSDP, DeepSpeed ZeRO, ...) says otherwise.
PTLAB_ACCELERATE_CONFIG = os.environ.get("PTLAB_ACCELERATE_CONFIG", "")

# --- limits: what one user or one request may ask for (README, "Limits") -------------------------------
# The experiment form, the API (which validates with the same form) and report imports check the same
# values; a refusal (HTTP 400, or 429 for the rate and queue limits) names the limit and its value.
PTLAB_MAX_RUNS_PER_EXPERIMENT = int(env_float("PTLAB_MAX_RUNS_PER_EXPERIMENT", 25))  # methods x seeds
PTLAB_MAX_QUEUED_RUNS_PER_USER = int(env_float("PTLAB_MAX_QUEUED_RUNS_PER_USER", 100))  # waiting + queued
PTLAB_MAX_EXPERIMENTS_PER_HOUR = int(env_float("PTLAB_MAX_EXPERIMENTS_PER_HOUR", 30))  # per user, imports too
PTLAB_MAX_JUDGE_JOBS_PER_HOUR = int(env_float("PTLAB_MAX_JUDGE_JOBS_PER_HOUR", 20))  # per user: a judge loads a model
PTLAB_MAX_UPLOAD_BYTES = int(env_float("PTLAB_MAX_UPLOAD_BYTES", 50 * 2**20))  # a JSONL dataset
PTLAB_MAX_UPLOAD_ROWS = int(env_float("PTLAB_MAX_UPLOAD_ROWS", 200_000))  # rows of a JSONL dataset
# A dataset upload larger than this is checked by a worker (queue PTLAB_IO_QUEUE) while its page polls it;
# a smaller one by the same code in the request (done before a page could poll it).
PTLAB_INLINE_UPLOAD_BYTES = int(env_float("PTLAB_INLINE_UPLOAD_BYTES", 2**20))
PTLAB_MAX_IMPORT_BYTES = int(env_float("PTLAB_MAX_IMPORT_BYTES", 100 * 2**20))  # a report's JSON
# metric points + samples + votes of one import; a worker does it (queue PTLAB_IO_QUEUE), never the request,
# which only stores the file (bench/RESULTS.md: "Report import in the background")
PTLAB_MAX_IMPORT_POINTS = int(env_float("PTLAB_MAX_IMPORT_POINTS", 200_000))
PTLAB_MAX_JSON_DEPTH = int(env_float("PTLAB_MAX_JSON_DEPTH", 32))  # nesting of any JSON a user sends
# An API body (or form) larger than this is refused with 413 (the API's JSON error shape); uploads are
# files and count against PTLAB_MAX_UPLOAD_BYTES / PTLAB_MAX_IMPORT_BYTES instead.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env_float("PTLAB_MAX_BODY_BYTES", 256 * 1024))
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# --- models by reference: folders on the workers a user may name as a model ------------------------
# Comma-separated absolute folders (e.g. /shared/models). A base or reward model is `tiny`, `demo`, a hub id
# (org/name), `run:<id>` (the final model of a finished run the user can see) or a path inside one of these.
PTLAB_DATA_ROOTS = [Path(p).resolve() for p in env_list("PTLAB_DATA_ROOTS") if Path(p).is_absolute()]

# --- production: HTTPS (README, "Production") ----------------------------------------------------------
# PTLAB_HTTPS=1 behind TLS: HSTS, secure cookies, redirect to https. A proxy that ends TLS sets
# X-Forwarded-Proto (trusted only with PTLAB_HTTPS_PROXY=1).
PTLAB_HTTPS = env_bool("PTLAB_HTTPS", False)
if PTLAB_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(env_float("PTLAB_HSTS_SECONDS", 31_536_000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("PTLAB_HSTS_PRELOAD", True)  # the header only; submitting is yours
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env_bool("PTLAB_HTTPS_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy of every response (webapp/csp.py): scripts and styles from this site only.
PTLAB_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
             "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
             "frame-ancestors 'none'")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "django.server": DEFAULT_LOGGING["formatters"]["django.server"]},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"},
                 "django.server": DEFAULT_LOGGING["handlers"]["django.server"]},
    "loggers": {
        "webapp": {"handlers": ["console"], "level": os.environ.get("PTLAB_LOG_LEVEL", "INFO")},
        # Django's own loggers: with DEBUG off its default sends them nowhere (mail_admins, with no ADMINS), so
        # an unhandled error's traceback (django.request, ERROR) would be lost. Here it goes to stderr.
        "django": {"handlers": ["console"], "level": "INFO" if DEBUG else "ERROR"},
        "django.server": DEFAULT_LOGGING["loggers"]["django.server"],  # runserver's request lines, as by default
    },
}
