# Two commands on a fresh machine with Python 3.11 and make:
#   make run    serve examples/counter.py with its dashboard
#   make test   the whole test suite (installs Debian's chromium for the browser tests)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test venv browser lint typecheck bench bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/funtask-trio serve examples.counter:server --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium; Playwright cannot download its own here.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

# wrk drives the benchmarks' HTTP load; without it they fall back to a Trio load generator.
bench-deps:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

bench: $(STAMP) bench-deps
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .funtask
