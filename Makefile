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

# What the tests need from Debian: Chromium (Playwright cannot download browsers here),
# Firefox ESR and WebKitGTK's driver with Xvfb (the other browsers), redis-server (the Redis
# tests start their own on a free port), and for the field lab (tests/field, run as root)
# iproute2, iptables and coturn; recordings are checked with ffmpeg's ffprobe.
SYSTEM_PACKAGES := chromium fonts-dejavu-core redis-server firefox-esr webkit2gtk-driver xvfb \
	iproute2 iptables coturn ffmpeg

system-deps:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "install ok installed" \
			|| missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $$missing; \
		else \
			echo "Missing:$$missing (run 'sudo apt-get install$$missing')" >&2; exit 1; \
		fi; \
	fi

PYTEST_ARGS ?=

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Speed and memory figures live here, never in timed tests. About 10 minutes on 2 cores (as
# root, the field part's real calls in the lab add about 16); it
# installs PeerJS server into bench/peerjs itself. ERV_BENCH_PARTS=relay,profile runs a part
# (see bench/run.py). Writes bench/RESULTS.md, bench/results.json and bench/relay.png.
bench: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
