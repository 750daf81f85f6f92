# ptlab: `make run` starts the app on this machine, `make test` runs every test.
#
#   make run         venv + demo model + migrate + login + Redis + Celery worker + web server (Ctrl-C stops all)
#   make test        every test: training, web app, integration (real Redis + worker), browser
#   make venv        create .venv and install requirements.txt (again only when it changed)
#   make lint        ruff
#   make demo-model  download and convert the `demo` model (SmolLM2-135M-Instruct) into the cache
#   make clean       remove caches and scratch files (keeps var/db.sqlite3, artifacts, the login, .venv)
#   make distclean   remove everything not in git: .venv and var/ (database, artifacts, login) too
#
# Variables: PYTHON (interpreter for the venv, default python3), PORT (web server, default 8000),
# REDIS_PORT (embedded Redis, default 6390), PYTEST_ARGS (e.g. PYTEST_ARGS="-x tests/training").

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.installed
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: run test venv lint demo-model clean distclean chromium

run: venv
	@$(PY) scripts/run_dev.py

test: venv chromium
	@if [ -x "$(CHROMIUM)" ]; then :; else \
	  echo "make test: $(CHROMIUM) is missing: the browser tests (tests/e2e) will be SKIPPED."; \
	  echo "           Install it with: sudo apt-get install -y chromium"; fi
	@# One torch thread per process: the tests run a pytest process and worker processes side by side, and
	@# 2-thread torch on 2 shared cores spins (tiny SFT 0.06 -> 0.35 s/step, bench/RESULTS.md).
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# The stamp holds a copy of the requirements it was installed from: a newer requirements.txt whose
# content did not change (a fresh checkout) costs a comparison, not a pip run.
$(STAMP): requirements.txt
	@if [ ! -x $(PY) ]; then \
	  echo "Creating $(VENV) with $$($(PYTHON) --version 2>&1)"; \
	  $(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }; \
	fi
	@if cmp -s requirements.txt $(STAMP); then \
	  touch $(STAMP); \
	else \
	  echo "Installing requirements.txt into $(VENV) (first time: a few minutes)"; \
	  set -o pipefail; \
	  $(PY) -m pip install --disable-pip-version-check -r requirements.txt 2>&1 \
	    | { grep -v -e '^Requirement already satisfied' -e "^WARNING: Location 'file:" || true; } \
	    && cp requirements.txt $(STAMP); \
	fi

# Browser tests need Debian's Chromium (Playwright cannot download its own browsers here).
# Installed when missing and we are root (CI); otherwise the browser tests skip with a message.
chromium:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing chromium (apt-get, about a minute)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
	    || echo "make test: could not install chromium with apt-get"; \
	fi

lint: venv
	$(VENV)/bin/ruff check .

demo-model: venv
	$(PY) -c 'from training.demo_model import prepare_demo; from training.models import cache_dir; prepare_demo(cache_dir() / "models")'

clean:
	rm -rf .pytest_cache .ruff_cache var/screenshots var/redis var/staticfiles
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var
