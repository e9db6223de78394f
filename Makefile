# Developer tasks. `make test` runs the suite against what is importable
# (build the extension first with `make build`); `make lint` is what CI checks.
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)/src

.PHONY: build test test-pure lint format annotate clean bench bench-load docs fuzz

build:  ## compile the Cython extensions in place (wire/_c.pyx, protocol/server.py)
	$(PYTHON) setup.py build_ext --inplace

test: build
	$(PYTHON) -m pytest

test-pure:  ## the suite against the pure-Python twin
	FASTSMTP_NO_EXTENSIONS=1 $(PYTHON) -m pytest

FUZZ_SECONDS ?= 60
fuzz: build  ## atheris on the wire twins and ServerConnection (pip install atheris)
	$(PYTHON) tests/fuzz/run.py --seconds $(FUZZ_SECONDS)

lint:
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m ruff format --check src tests bench
	$(PYTHON) -m mypy --strict src

format:
	$(PYTHON) -m ruff format src tests bench
	$(PYTHON) -m ruff check --fix src tests bench

bench: build  ## micro benchmarks of the wire layer, [py] and [c] (see bench/README.md)
	$(PYTHON) -m pytest bench/test_micro.py --benchmark-only --benchmark-sort=name \
		--benchmark-columns=min,median,mean,stddev,rounds

bench-load: build  ## loopback load benchmark vs aiosmtpd and smtp-sink: bench/results/latest.*
	$(PYTHON) -m bench.load --readme

.PHONY: wheel-check
wheel-check:  ## sdist -> wheel -> auditwheel -> suite vs the installed wheel; CC=false and no-Cython installs
	PYTHON=$(PYTHON) bash scripts/wheel_check.sh

docs:  ## regenerate the settings reference in README.md from the dataclass
	$(PYTHON) -c 'import re, pathlib; from fastsmtp.cli import settings_table as t; p = pathlib.Path("README.md"); p.write_text(re.sub(r"(<!-- settings:start -->\n).*?(\n<!-- settings:end -->)", lambda m: m.group(1) + t() + m.group(2), p.read_text(), flags=re.S))'

annotate:  ## HTML reports of what Cython left in Python: src/fastsmtp/{wire/_c,protocol/server,connection}.html
	$(PYTHON) -m cython -a -3 src/fastsmtp/wire/_c.pyx
	$(PYTHON) -m cython -a -3 -X annotation_typing=False --module-name fastsmtp.protocol._server_c \
		src/fastsmtp/protocol/server.py
	$(PYTHON) -m cython -a -3 -X annotation_typing=False -I src --module-name fastsmtp._connection_c \
		src/fastsmtp/connection.py
	@echo "open src/fastsmtp/wire/_c.html src/fastsmtp/protocol/server.html src/fastsmtp/connection.html"

clean:
	rm -rf build dist src/*.egg-info src/fastsmtp/wire/_c.c src/fastsmtp/wire/_c.html \
		src/fastsmtp/wire/_c.*.so src/fastsmtp/protocol/server.c src/fastsmtp/protocol/server.html \
		src/fastsmtp/protocol/_server_c.*.so src/fastsmtp/connection.c src/fastsmtp/connection.html \
		src/fastsmtp/_connection_c.*.so
