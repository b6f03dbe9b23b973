# MANTA — one entry point for setup, tests, the demo and the benchmarks.
# Every target does its own setup, so `make test` and `make demo` work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; a GPU rig installs a CUDA build first (see README).
TORCH_SPEC ?= torch==2.13.0

# The task monitor's chart library (npm: uplot), copied next to the page at setup and served
# by the miner and the client from there: no CDN, nothing fetched at run time.
MONITOR_VENDOR := node/monitor/static/vendor
UPLOT          := node_modules/uplot
# The browser of the monitor's browser tests: Debian's chromium, driven by Playwright (whose
# own browser downloads are not used).
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup browser test test-py test-contracts lint demo demo-stereo bench bench-long clean

setup: $(VENV)/.stamp node_modules/.stamp $(MONITOR_VENDOR)/.stamp

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

$(MONITOR_VENDOR)/.stamp: node_modules/.stamp
	mkdir -p $(MONITOR_VENDOR)
	cp $(UPLOT)/dist/uPlot.esm.js $(UPLOT)/dist/uPlot.min.css $(MONITOR_VENDOR)/
	cp $(UPLOT)/LICENSE $(MONITOR_VENDOR)/uPlot.LICENSE
	touch $@

# Installs chromium when it is missing (apt-get update only when the package is unknown);
# without root or apt it says so and goes on: the browser tests then skip.
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "note: $(CHROMIUM) is missing; install Debian's chromium as root for the browser tests"; \
		exit 0; fi; \
	apt-cache show chromium >/dev/null 2>&1 || apt-get update -q; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

test: setup
	$(MAKE) test-contracts
	$(MAKE) test-py

test-py: setup browser
	$(PY) -m pytest -q

test-contracts: setup
	bash scripts/forge-test.sh

lint: setup
	$(VENV)/bin/ruff check node miner client tests bench
	$(VENV)/bin/mypy
	$(PY) scripts/check_imports.py

demo: setup
	$(VENV)/bin/manta-node demo

demo-stereo: setup
	$(VENV)/bin/manta-node demo --stereo

# Each script prints a table and, as its last line, one JSON object (see bench/RESULTS.md).
# The long ones (inherit ~20 min, stereo ~15 min) run only with `make bench-long`.
BENCH_QUICK := gas search supernet_overhead allreduce
BENCH_LONG  := inherit stereo

bench: setup
	@for b in $(BENCH_QUICK); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

bench-long: setup
	@for b in $(BENCH_LONG); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) node_modules contracts/out contracts/cache $(MONITOR_VENDOR)
