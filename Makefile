# Each target sets itself up on a fresh machine: a virtualenv in .venv with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/erv run --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The browser tests need Debian's Chromium (Playwright cannot download browsers here); the
# Redis tests start their own redis-server on a free port.
system-deps:
	@if [ ! -x "$(CHROMIUM)" ] || ! command -v redis-server >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends chromium fonts-dejavu-core redis-server; \
		else \
			echo "Missing: run 'sudo apt-get install chromium redis-server'" >&2; exit 1; \
		fi; \
	fi

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Speed and memory figures live here, never in timed tests. About 10 minutes on 2 cores; it
# installs PeerJS server into bench/peerjs itself. ERV_BENCH_PARTS=relay,profile runs a part
# (see bench/run.py). Writes bench/RESULTS.md, bench/results.json and bench/relay.png.
bench: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
