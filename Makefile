# LCMS developer commands. `make help` lists them; CI runs `make setup` then `make test`.
# `make demo` and `make test` set everything up first (once: a stamp keyed to the lock file, the
# project metadata and this Makefile makes a second run cost nothing; a changed lock re-installs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV_VERSION ?= 0.13.9
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
# The compose-spec JSON schema that validates docker-compose.yml (tests): the one docker-compose 1.29.2
# ships, taken from its wheel on PyPI, checked against the wheel's published SHA-256.
COMPOSE_WHEEL := docker_compose-1.29.2-py2.py3-none-any.whl
COMPOSE_WHEEL_SHA256 := 8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809
COMPOSE_SCHEMA := $(VENV)/share/lcms/compose_spec.json
SETUP_STAMP := $(VENV)/.lcms-setup-stamp

# Airflow on one machine: SQLite metadata database, LocalExecutor, DAGs and plugins from this repo.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR ?= LocalExecutor
export UV_PYTHON_DOWNLOADS := never
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help setup system-deps install compose-schema airflow-init lock lint typecheck test test-unit test-dags demo airflow serve clean bench bench-quick bench-services bench-parcels bench-scale bench-scale-chain

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP) ## install everything (system packages, .venv from the lock) and initialise Airflow; idempotent
	@echo "setup done: $(VENV) ($$($(PY) --version)), Airflow $$(airflow version 2>/dev/null) at $(AIRFLOW_HOME)"

# Re-made when the lock, the project metadata or this Makefile changes (or the venv is gone).
$(SETUP_STAMP): uv.lock pyproject.toml Makefile
	$(MAKE) --no-print-directory system-deps install airflow-init compose-schema
	touch $@

system-deps: ## Debian packages: headless Chromium (browser tests, PDF report), poppler-utils (PDF page count), PostGIS for the installed PostgreSQL (change store)
	@need=""; command -v chromium >/dev/null || need=" chromium"; \
	command -v pdfinfo >/dev/null || need="$$need poppler-utils"; \
	pg=$$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1); \
	if [ -n "$$pg" ] && [ ! -f /usr/share/postgresql/$$pg/extension/postgis.control ]; then need="$$need postgresql-$$pg-postgis-3"; fi; \
	if [ -z "$$pg" ]; then need="$$need postgresql postgresql-postgis"; fi; \
	if [ -n "$$need" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "apt-get install$$need"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need; \
		else echo "warning: missing Debian packages ($$need) and apt-get unavailable (not root?)"; fi; fi

install: ## install Python $(PYTHON_VERSION) packages into .venv exactly as uv.lock pins them (the Docker image runs this too)
	@command -v python$(PYTHON_VERSION) >/dev/null || { echo "python$(PYTHON_VERSION) is required"; exit 1; }
	@if ! command -v uv >/dev/null || [ "$$(uv --version | cut -d' ' -f2)" != "$(UV_VERSION)" ]; then \
		python$(PYTHON_VERSION) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; fi
	uv sync --frozen --extra dev --python python$(PYTHON_VERSION)

compose-schema: ## the compose-spec JSON schema (from docker-compose 1.29.2's wheel, hash-checked) for the docker-compose.yml test
	@if [ ! -f $(COMPOSE_SCHEMA) ]; then \
		tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
		uvx --quiet --from pip==25.3 pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
			-d $$tmp docker-compose==1.29.2 2>/dev/null && \
		echo "$(COMPOSE_WHEEL_SHA256)  $$tmp/$(COMPOSE_WHEEL)" | sha256sum --check --quiet && \
		mkdir -p $(dir $(COMPOSE_SCHEMA)) && \
		$(PY) -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('compose/config/compose_spec.json'))" \
			$$tmp/$(COMPOSE_WHEEL) > $(COMPOSE_SCHEMA).tmp && \
		mv $(COMPOSE_SCHEMA).tmp $(COMPOSE_SCHEMA) && echo "compose-spec schema: $(COMPOSE_SCHEMA)"; fi

airflow-init: ## create or upgrade Airflow's metadata database (SQLite under .airflow unless configured otherwise)
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

lock: ## re-resolve dependencies into uv.lock (needs the package registry)
	uv lock --python python$(PYTHON_VERSION)

lint: $(SETUP_STAMP) ## ruff (incl. Airflow rules)
	ruff check lcms_tasks lcms_service plugins dags tests bench
	ruff format --check lcms_tasks lcms_service plugins dags tests bench

typecheck: $(SETUP_STAMP) ## mypy
	mypy

test: $(SETUP_STAMP) lint typecheck ## the whole suite (sets up first if needed): lint, types, unit, real-data, DAG integrity, e2e
	pytest

test-unit: $(SETUP_STAMP) ## unit and real-data tests only (fast)
	pytest tests/unit tests/integration

test-dags: $(SETUP_STAMP) ## DAG integrity and end-to-end Airflow tests
	pytest tests/dags tests/e2e

demo: $(SETUP_STAMP) ## run the demo chain through Airflow (scheduler + executor + SQLite) and print its summary
	$(PY) -m lcms_airflow.demo

airflow: $(SETUP_STAMP) ## the Airflow UI on the local metadata database, http://127.0.0.1:8080 (Ctrl-C stops every component)
	$(PY) -m lcms_airflow.local_stack

serve: $(SETUP_STAMP) ## the operator application and the OGC API on the last demo's results: http://127.0.0.1:8000/ (HOST=, PORT= to change)
	$(VENV)/bin/lcms serve --config configs/demo.yaml --host $(or $(HOST),127.0.0.1) --port $(or $(PORT),8000)

bench-parcels: $(SETUP_STAMP) ## parcel crop type on the real French parcels: raw-band baseline and each feature's effect (5-fold CV x 6)
	$(PY) -m bench.parcels --out bench-results

bench-services: $(SETUP_STAMP) ## change store + OGC API on 1,000,000 polygons: load rate, bbox query and vector tile latency, COG writing (DATABASE_URL= to use a server)
	$(PY) -m bench.services --out bench-results $(if $(DATABASE_URL),--database-url $(DATABASE_URL))

BENCH_SCALE_ARGS = $(if $(TILES),--tiles $(TILES)) $(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(EXECUTORS),--executors $(EXECUTORS))
bench-scale: $(SETUP_STAMP) ## 5,000 tiles of 32 px, one mapped stage through the real scheduler: LocalExecutor (SQLite), then CeleryExecutor (PostgreSQL, Redis, 2 workers) (TILES=, BATCH_SIZE=, EXECUTORS=)
	$(PY) -m bench.scale --out bench-results $(BENCH_SCALE_ARGS)

bench-scale-chain: $(SETUP_STAMP) ## the same country through the whole chain, download to reporting (TILES=, BATCH_SIZE=, EXECUTORS=)
	$(PY) -m bench.scale --out bench-results --chain $(BENCH_SCALE_ARGS)

clean: ## remove local data, Airflow state, the embedded change store and caches (not .venv)
	-@[ -x $(VENV)/bin/lcms ] && $(VENV)/bin/lcms db stop >/dev/null 2>&1; true
	rm -rf lcms-data .airflow .lcms test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis
bench: $(SETUP_STAMP) ## per-stage speed and memory vs eo-learn's stock tasks on a 500 px, ~70-date tile (+ scaling 250/500/1000 px)
	$(PY) -m bench.run --size 500 --scaling 250,500,1000 --out bench-results
bench-quick: $(SETUP_STAMP) ## the same measurements on a small tile (< 1 minute)
	$(PY) -m bench.run --quick --out bench-results

# The operator application's npm libraries, vendored: their dist files are committed under
# lcms_service/static/vendor/ (versions, licences: VENDOR.md there), so `make setup` needs no npm and
# the page works offline. This re-makes them from frontend/package-lock.json (needs Node.js + npm).
.PHONY: vendor-frontend
FRONTEND_VENDOR := lcms_service/static/vendor
vendor-frontend: ## re-vendor the operator app's JS libraries: npm ci in frontend/, dist files into lcms_service/static/vendor/
	cd frontend && npm ci --no-audit --no-fund --ignore-scripts
	rm -rf $(FRONTEND_VENDOR)/maplibre-gl $(FRONTEND_VENDOR)/maplibre-gl-compare
	mkdir -p $(FRONTEND_VENDOR)/maplibre-gl $(FRONTEND_VENDOR)/maplibre-gl-compare
	cp frontend/node_modules/maplibre-gl/dist/maplibre-gl.js frontend/node_modules/maplibre-gl/dist/maplibre-gl.css \
		frontend/node_modules/maplibre-gl/LICENSE.txt frontend/node_modules/maplibre-gl/package.json \
		$(FRONTEND_VENDOR)/maplibre-gl/
	cp frontend/node_modules/@maplibre/maplibre-gl-compare/dist/maplibre-gl-compare.js \
		frontend/node_modules/@maplibre/maplibre-gl-compare/dist/maplibre-gl-compare.css \
		frontend/node_modules/@maplibre/maplibre-gl-compare/LICENCE \
		frontend/node_modules/@maplibre/maplibre-gl-compare/package.json \
		$(FRONTEND_VENDOR)/maplibre-gl-compare/
	@echo "vendored into $(FRONTEND_VENDOR): $$(ls $(FRONTEND_VENDOR) | tr '\n' ' ')(record changes in $(FRONTEND_VENDOR)/VENDOR.md)"
