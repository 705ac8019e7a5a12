# OpsLake: `make demo` (first command) and `make test` (second command). See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
export OPSLAKE_HOME ?= $(CURDIR)/var
DEMO_ENTITIES ?= 500
DEMO_DAYS ?= 3
# LIVE=1: real Prometheus, node_exporter, Alertmanager, rsyslog feed OpsLake beside the simulator.
LIVE ?= 0
# The demo's UIs stay on loopback behind `opslake serve`'s doors (one sign-in at :8700/login).
demo: export OPSLAKE_DAGSTER_DOOR_PORT ?= 3000
demo: export OPSLAKE_DAGSTER_UPSTREAM ?= http://127.0.0.1:3001
demo: export OPSLAKE_SUPERSET_DOOR_PORT ?= 8090

.PHONY: install demo test bench lint clean screens screens-stop

install: $(VENV)/.installed

# Hash-checked install from the lock (requirements.lock, made by `uv pip compile
# --generate-hashes`); the project itself goes in editable, without resolving anything.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --require-hashes -r requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
	touch $@

demo: install
	$(VENV)/bin/opslake catalog validate
	$(VENV)/bin/opslake simulate --entities $(DEMO_ENTITIES) --days $(DEMO_DAYS)
	$(VENV)/bin/opslake materialize
	$(VENV)/bin/opslake ml train
	$(VENV)/bin/opslake materialize --select gold/incident_risk
	$(VENV)/bin/opslake warehouse build
	$(VENV)/bin/opslake status --by layer
	$(VENV)/bin/opslake catalog query service.sla.attainment --scope business
	$(VENV)/bin/opslake alerts incidents --limit 10
	$(MAKE) --no-print-directory screens
	@echo "Sign in:          http://127.0.0.1:8700/login (a user first: opslake security" \
	      "bootstrap-admin NAME, then enrol-totp NAME)"
	@echo "Superset screens: $$($(VENV)/bin/opslake screens url)  (stop: make screens-stop)"
	@echo "Dagster UI:       http://127.0.0.1:$$OPSLAKE_DAGSTER_DOOR_PORT/"
	if [ "$(LIVE)" = 1 ]; then VENV=$(VENV) bash infra/demo-live.sh; else VENV=$(VENV) bash infra/demo-ui.sh; fi

# Superset (own venv, see infra/install-superset.sh) with the screens of dashboards/ imported
# and the roles provisioned, on 127.0.0.1:8088 (OPSLAKE_SUPERSET_PORT); it keeps running.
screens: install
	bash infra/install-superset.sh
	$(VENV)/bin/opslake screens start

screens-stop: install
	$(VENV)/bin/opslake screens stop

# The integration tests start real Prometheus, node_exporter and Alertmanager (Debian
# packages) and Superset (its own venv) on loopback, and read gold with Spark (pyspark, kept
# out of requirements.lock so `make demo` does not fetch it); installing them is part of the
# test command.
test: install
	bash infra/install-services.sh
	bash infra/install-superset.sh
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --require-hashes -r infra/spark/requirements.txt
	$(PY) -m pytest -q

bench: install
	$(PY) -m tests.benchmarks.bench_pipeline
	$(PY) -m tests.benchmarks.bench_ingest
	$(PY) -m tests.benchmarks.bench_catalog
	$(PY) -m tests.benchmarks.bench_ml
	$(PY) -m tests.benchmarks.bench_api

lint: install
	$(VENV)/bin/ruff check opslake tests infra
	$(VENV)/bin/ruff format --check opslake tests infra
	$(VENV)/bin/lint-imports

clean:
	rm -rf var .pytest_cache
