# Support Bot: `make run` starts everything on the embedded default; `make test` tests it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
PROD_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test test-default test-production install install-test browser lint bench bench-inbox faults fake-llm clean

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Support Bot needs Python 3.11 or newer")'
	@# Debian's python3 comes without venv/ensurepip until python3-venv is installed.
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "Install python3-venv first (sudo apt-get install python3-venv)"; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@touch $@

$(VENV)/.installed: $(VENV)/.python-ok pyproject.toml
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Start the whole app (web, worker, embedded Redis, SQLite, offline answerer) on :8000.
run: install
	$(PY) -m support_bot.launcher

## Chromium for the browser tests: Debian's package (Playwright's own download is not needed).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation >/dev/null; \
	  elif [ "$$CI" = true ]; then \
	    echo "chromium is missing and cannot be installed (need root and apt-get)"; exit 1; \
	  else \
	    echo "chromium not found: browser tests will be skipped (install the chromium package)"; \
	  fi; \
	fi

## Install what the tests need, then run the suite on both paths side by side: each pass has
## its own database, Redis and key prefix, and most of a test's time is waiting, not CPU.
## Each pass's output is printed whole when it ends; `make test-default` runs one alone.
test: install-test browser lint
	@MAKE_TEST_PASSES=both $(MAKE) --no-print-directory -j2 --output-sync=target test-default test-production

test-default:
	@echo "=== Embedded default: SQLite + embedded Redis ==="
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest --durations=25

test-production:
	@echo "=== Production path: Postgres + Redis ==="
	DATABASE_URL=$(PG_URL) REDIS_URL=$(PROD_REDIS_URL) $(PY) -m pytest --durations=25

## Style, types, and the one-way dependencies between apps (pyproject.toml, tool.importlinter).
lint: install-test
	$(VENV)/bin/ruff check .
	DEBUG=1 REDIS_URL=redis://unused:6379/0 $(VENV)/bin/mypy support_bot knowledge bot conversations inbox studio
	$(VENV)/bin/lint-imports

## TTFT against a direct call and CPU per reply: bursts 1, 50, 200, 1,000 connected at 20
## messages/s, 5,000 idle sockets, the embedded default at 50 (bench/README.md). Options, e.g.
## the commit before in the same run: make bench BENCH_ARGS="--compare HEAD~1".
bench: install-test
	$(PY) bench/load.py $(BENCH_ARGS)

## The inbox at 100,000 conversations and 2 million turns (bench/inbox.py): seeds its own fresh
## Postgres database (BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432), prints p50/p95.
bench-inbox: install-test
	$(PY) bench/inbox.py $(BENCH_ARGS)

## Faults injected while customers are mid-reply (bench/faults.py); fails on anything lost,
## doubled or hung, or a recovery over 10 s. Options: make faults FAULTS_ARGS="--quick".
faults: install-test
	$(PY) bench/faults.py $(FAULTS_ARGS)

fake-llm: install
	$(PY) -m tests.fake_llm --port 9100 --ttft-ms 300 --tokens-per-s 50

clean:
	rm -rf var staticfiles .pytest_cache
