# Developer tasks. `make test` runs the suite against what is importable
# (build the extension first with `make build`); `make lint` is what CI checks.
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)/src

.PHONY: build test test-pure lint format annotate clean

build:  ## compile the Cython wire layer in place
	$(PYTHON) setup.py build_ext --inplace

test: build
	$(PYTHON) -m pytest

test-pure:  ## the suite against the pure-Python twin
	FASTSMTP_NO_EXTENSIONS=1 $(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check src tests
	$(PYTHON) -m ruff format --check src tests
	$(PYTHON) -m mypy --strict src

format:
	$(PYTHON) -m ruff format src tests
	$(PYTHON) -m ruff check --fix src tests

annotate:  ## HTML report of what Cython left in Python: src/fastsmtp/wire/_c.html
	$(PYTHON) -m cython -a -3 src/fastsmtp/wire/_c.pyx
	@echo "open src/fastsmtp/wire/_c.html"

clean:
	rm -rf build dist src/*.egg-info src/fastsmtp/wire/_c.c src/fastsmtp/wire/_c.html \
		src/fastsmtp/wire/_c.*.so
