# Vesalius: the two commands of the README's quick start are `make run` and `make test`.
#   make run    installs Vesalius in .venv and serves the archive on the embedded default
#   make test   installs what the tests need (DCMTK, Chromium, Orthanc, database drivers) and runs every test

VENV ?= .venv
# The distribution's own Python where it can (scripts/pick-python says why); PYTHON=... to choose.
PYTHON ?= $(shell scripts/pick-python)
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run install install-test test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# A C compiler and Python's headers build the header scan's C part (setup.py); without them
# the install goes on and the scan runs in Python, slower.
CC_PACKAGES := gcc python3-dev

install: $(PY)
	scripts/install-system-packages $(CC_PACKAGES) || echo "no C compiler: the header scan runs in Python"
	$(PY) -m pip install --quiet -e .
	command -v npm >/dev/null || scripts/install-system-packages npm
	$(PY) scripts/fetch-viewer
	$(PY) scripts/fetch-portal-assets

run: install
	$(VENV)/bin/vesalius serve

install-test: $(PY)
	scripts/install-system-packages $(CC_PACKAGES) dcmtk chromium orthanc orthanc-dicomweb
	command -v npm >/dev/null || scripts/install-system-packages npm
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet tests/plugins/example
	$(PY) scripts/fetch-viewer
	$(PY) scripts/fetch-portal-assets

test: install-test
	scripts/ensure-services
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install-test
	scripts/install-system-packages dcmtk orthanc orthanc-dicomweb
	$(PY) benchmarks/dimse_bench.py
	$(PY) benchmarks/dicomweb_bench.py
	$(PY) benchmarks/worklist_bench.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
