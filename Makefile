# The two commands of the README: `make run` and `make test`. Everything else is set-up they share.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: run test lint bench install chromium

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Runs the whole platform on the embedded default (SQLite + filesystem broker): web, worker,
# scheduler and the simulator streaming metrics; prints URLs and logins. Options go in RUN_ARGS,
# e.g. `make run RUN_ARGS="--port 8001 --days 7"` (see `manage.py run_platform --help`).
run: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py run_platform $(RUN_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; Playwright never
# downloads a browser of its own. Installed here when missing and we are root; otherwise the
# browser tests skip and say why.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "$(CHROMIUM) is missing and we are not root: the browser tests will be skipped."; fi

test: $(STAMP) lint chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
