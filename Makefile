# hubexport developer commands. `make demo` runs the main job end to end,
# `make test` runs the whole test suite (CI runs it through .ci/run).
PYTHON ?= python3
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
LITERT_VENV ?= .venv-litert
# TensorFlow.js for the Node.js checks of the TF.js variants (npm ci from the lockfile).
TFJS_DIR := tests/tfjs
BIN := $(VENV)/bin
DEMO_DIR ?= build/demo
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers (tests that
# share a module or session fixture stay on one; see tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: install install-legacy install-litert install-tfjs demo test test-fast test-legacy bench build-all clean

install: $(BIN)/.installed
$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# A venv of a requirements file's packages, for a rule VENV/bin/.installed:
# REQUIREMENTS.txt ($(@D) is VENV/bin, $< the requirements file).
define requirements_venv
	$(PYTHON) -m venv $(patsubst %/bin,%,$(@D))
	$(@D)/pip install -q --upgrade pip
	$(@D)/pip install -q -r $<
	touch $@
endef

# The legacy client for the TF1 Hub format: tensorflow-cpu 2.15.1 +
# tensorflow-hub 0.15.0 (hub.Module), plus tf-slim as a reference net.
install-legacy: $(LEGACY_VENV)/bin/.installed
$(LEGACY_VENV)/bin/.installed: requirements-legacy.txt
	$(requirements_venv)

# LiteRT's interpreter (ai-edge-litert), which runs the .tflite variants in
# tests/test_deploy_tflite.py in a process of its own, as an app would.
install-litert: $(LITERT_VENV)/bin/.installed
$(LITERT_VENV)/bin/.installed: requirements-litert.txt
	$(requirements_venv)

# @tensorflow/tfjs 4.22.0 (+ the wasm backend) as tests/tfjs/package-lock.json pins
# it, for tests/test_deploy_tfjs.py, which runs the TF.js variants in Node.js.
install-tfjs: $(TFJS_DIR)/node_modules/.installed
$(TFJS_DIR)/node_modules/.installed: $(TFJS_DIR)/package-lock.json
	cd $(TFJS_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

demo: install
	PYTHON=$(BIN)/python DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

test: install install-legacy install-litert install-tfjs
	HUBEXPORT_LEGACY_PYTHON=$(CURDIR)/$(LEGACY_VENV)/bin/python \
	HUBEXPORT_LITERT_PYTHON=$(CURDIR)/$(LITERT_VENV)/bin/python $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not legacy" $(PYTEST_ARGS)

test-legacy: install install-legacy
	HUBEXPORT_LEGACY_PYTHON=$(CURDIR)/$(LEGACY_VENV)/bin/python $(BIN)/python -m pytest -q -m legacy $(PYTEST_ARGS)

# Byte-compiled first, as `pip install` (not editable) leaves an installed
# package: the start-up figures then measure imports, not compiling.
bench: install install-litert
	$(BIN)/python -m compileall -q hubexport
	HUBEXPORT_LITERT_PYTHON=$(CURDIR)/$(LITERT_VENV)/bin/python $(BIN)/python benchmarks/run.py

# Every module of every shipped spec (48 models, 428 modules) and its card
# into $(MODULES_DIR), from the canonical URLs. Most sources have no published
# checksum: once you accept that, pass BUILD_ARGS=--allow-unpinned (plus e.g.
# --mirror URL for a local copy of the tarballs). The test suite builds a
# representative set (README: Tests); `make bench` times a build of all.
MODULES_DIR ?= modules
BUILD_JOBS ?= 2
BUILD_ARGS ?=
build-all: install
	$(BIN)/hubexport build --all --jobs $(BUILD_JOBS) --output $(MODULES_DIR) $(BUILD_ARGS)

clean:
	rm -rf build modules .pytest_cache
