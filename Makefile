# taskledger — the two commands of the README are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The official AsyncAPI JSON Schemas (npm; no PyPI package ships the 3.0 one), for
# tests/unit/test_asyncapi.py.
ASYNCAPI_SPECS := $(VENV)/npm/node_modules/@asyncapi/specs/package.json

.PHONY: install services browser test test-all lint format demo console screenshots bench bench-quick bench-ledger bench-ledger-default chaos chaos-quick scale openapi clean

install: $(STAMP) $(ASYNCAPI_SPECS)  ## create the virtual environment and install taskledger with its dev tools

$(ASYNCAPI_SPECS): | $(STAMP)
	npm install --no-save --no-audit --no-fund --silent --prefix $(VENV)/npm @asyncapi/specs@6.11.1

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

services:  ## make sure PostgreSQL and RabbitMQ answer on 127.0.0.1 (installs/starts them)
	@scripts/ensure_services.sh

browser:  ## make sure Debian's chromium and chromium-driver are installed (the browser tests)
	@scripts/ensure_browser.sh

test: install services browser  ## the test suite (unit, integration, migration, acceptance, e2e) on $(TEST_WORKERS) workers, about 5 min
	$(PY) -m pytest -m "not slow and not cluster" -q -n $(TEST_WORKERS)

test-all: install services browser  ## also the slow tests
	$(PY) -m pytest -q

lint: install  ## ruff and mypy (strict on contracts and consumer)
	$(VENV)/bin/ruff check contracts consumer migrations tests scripts bench
	$(VENV)/bin/ruff format --check contracts consumer migrations tests scripts bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format contracts consumer migrations tests scripts bench
	$(VENV)/bin/ruff check --fix contracts consumer migrations tests scripts bench

demo: install services  ## migrate, run the service, feed it traffic, show the result
	$(PY) scripts/demo.py

# The demo's settings (TASKLEDGER_DATABASE_URL / _PREFIX from the environment, else the
# defaults). Without TASKLEDGER_API_TOKEN the console's token is "demo" (local only).
console: install services  ## the ops console on the demo's data, http://127.0.0.1:8080/ui/, until Ctrl-C
	@echo "ops console: http://127.0.0.1:8080/ui/ (Ctrl-C stops it)"
	@[ -n "$${TASKLEDGER_API_TOKEN:-}" ] || echo 'token for the actions and dead letters: demo'
	TASKLEDGER_API_TOKEN="$${TASKLEDGER_API_TOKEN:-demo}" $(PY) -m consumer.cli api --host 127.0.0.1 --port 8080

screenshots: install services browser  ## the browser tests, writing docs/img/console-*.png
	TASKLEDGER_SCREENSHOTS=1 $(PY) -m pytest tests/e2e -q

bench: install services  ## consumer, capacity and replay benchmarks (full size), writes bench/results/
	$(PY) bench/run_all.py

bench-quick: install services  ## the same benchmarks at a small size (what CI runs)
	$(PY) bench/run_all.py --quick

bench-ledger: install services  ## insert rate and audit queries with 20,000,000 ledger rows present, on a scratch PostgreSQL sized for it (about 45 min, 23 GB)
	scripts/pg-scratch.sh start
	TASKLEDGER_TEST_DATABASE_URL=$$(scripts/pg-scratch.sh url) $(PY) bench/ledger_scale.py; \
	status=$$?; scripts/pg-scratch.sh stop; exit $$status

bench-ledger-default: install services  ## the same on the machine's own PostgreSQL as configured (defaults: 128 MB shared_buffers)
	$(PY) bench/ledger_scale.py

chaos: install services  ## the chaos suite (about 15 minutes, with the 3-node cluster scenario), writes docs/RELIABILITY.md
	$(PY) -m pytest tests/chaos -m slow -q -s

chaos-quick: install services  ## a short form of the chaos suite (also the cluster's short form)
	$(PY) -m pytest tests/chaos -m "not slow" -q

TEST_WORKERS ?= 2

SCALE_DB ?= postgresql://postgres@127.0.0.1:5432/tl_scale

scale: install services  ## 1,000,000 tasks / 5,000,000 steps in $(SCALE_DB), then the query and console page timings
	$(PY) scripts/generate_scale_data.py --database-url $(SCALE_DB)
	$(PY) -m bench.scale_queries --database-url $(SCALE_DB) --output bench/results/scale_queries.json
	$(PY) bench/ui_render.py --database-url $(SCALE_DB)

openapi: install  ## regenerate docs/openapi.json
	$(PY) -m consumer.http.app docs/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/results
