# deepgaze-jax: one venv in .venv, everything installed from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# DEMO_IMAGE empty: the example photographs shipped in src/deepgaze_jax/assets/examples
DEMO_IMAGE ?=

.PHONY: install install-test demo test test-all bench crossval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[serve]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[serve,test,parity]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Predict densities for the shipped example photographs (or DEMO_IMAGE) with the bundled model: out/demo/*.png.
demo: install
	$(VENV)/bin/deepgaze-jax predict $(or $(DEMO_IMAGE),--example) --out out/demo

# The test command of the README and of CI.
test: install-test
	$(PY) -m pytest -q -m "not slow"

test-all: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) -m benchmarks.run

crossval: install  # Lite0 with the paper taps: the README crossvalidation figures (honest protocol: inner stopping, folds at once)
	$(PY) -m experiments.crossval_mit1003 --config lite0_inner

clean:
	rm -rf out runs .pytest_cache
