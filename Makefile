# deepgaze-jax: one venv in .venv, everything installed from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/datasets/mit1003
DEMO_IMAGE ?= $(DATA)/stimuli/i05june05_static_street_boston_p1010764.jpg

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

# Predict a density for an MIT1003 image with the bundled model and write out/demo/*.png.
demo: install
	$(VENV)/bin/deepgaze-jax predict $(DEMO_IMAGE) --out out/demo

# The test command of the README and of CI.
test: install-test
	$(PY) -m pytest -q -m "not slow"

test-all: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) -m benchmarks.run

crossval: install
	$(PY) -m experiments.crossval_mit1003 --no-pretrain

clean:
	rm -rf out runs .pytest_cache
