# MANTA — one entry point for setup, tests, the demo and the benchmarks.
# Every target does its own setup, so `make test` and `make demo` work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; a GPU rig installs a CUDA build first (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test test-py test-contracts lint demo bench bench-long clean

setup: $(VENV)/.stamp node_modules/.stamp

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[miner,dev]'
	$(PY) -m pip install -q --no-deps animal-mnist==0.4
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

test: setup
	$(MAKE) test-contracts
	$(MAKE) test-py

test-py: setup
	$(PY) -m pytest -q

test-contracts: setup
	bash scripts/forge-test.sh

lint: setup
	$(VENV)/bin/ruff check node miner client tests bench
	$(VENV)/bin/mypy
	$(PY) scripts/check_imports.py

demo: setup
	$(VENV)/bin/manta-node demo

# Each script prints a table and, as its last line, one JSON object (see bench/RESULTS.md).
# The long ones (inherit ~20 min, stereo ~15 min) run only with `make bench-long`.
BENCH_QUICK := gas search supernet_overhead allreduce
BENCH_LONG  := inherit stereo

bench: setup
	@for b in $(BENCH_QUICK); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

bench-long: setup
	@for b in $(BENCH_LONG); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) node_modules contracts/out contracts/cache
