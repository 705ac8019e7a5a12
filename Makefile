# OpsLake: `make demo` (first command) and `make test` (second command). See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# pip-audit and cyclonedx-bom, hash-locked in infra/supply_chain/requirements.txt, live in their
# own venv: neither the shipped environment nor its SBOM carries them.
TOOLS_VENV ?= .venv-tools
SBOM ?= var/sbom/opslake.cdx.json
# pytest-xdist workers for `make test`: a module's tests run on one worker, and the modules
# sharing the session's Superset on one (tests/conftest.py). Alone, one worker leaves 40 % of
# 2 cores idle (the tests wait on services, subprocesses and fsync).
TEST_WORKERS ?= 2
SUPERSET_SITE = $${OPSLAKE_SUPERSET_VENV:-$${XDG_CACHE_HOME:-$$HOME/.cache}/opslake/superset-venv}/lib/python3.11/site-packages
COMPILE := $(UV) pip compile --quiet --universal --generate-hashes --python-version 3.11
export OPSLAKE_HOME ?= $(CURDIR)/var
DEMO_ENTITIES ?= 500
DEMO_DAYS ?= 3
# LIVE=1: real Prometheus, node_exporter, Alertmanager, rsyslog feed OpsLake beside the simulator.
LIVE ?= 0
# The demo's UIs stay on loopback behind `opslake serve`'s doors (one sign-in at :8700/login).
demo: export OPSLAKE_DAGSTER_DOOR_PORT ?= 3000
demo: export OPSLAKE_DAGSTER_UPSTREAM ?= http://127.0.0.1:3001
demo: export OPSLAKE_SUPERSET_DOOR_PORT ?= 8090

.PHONY: install demo test bench lint clean screens screens-stop tools lock lock-wheels \
	check-locks audit sbom licences debian-pins

install: $(VENV)/.installed

# Hash-checked install from the lock (requirements.lock, made by `make lock`: one universal
# lock for x86_64 and aarch64 Linux); uv itself from its own hash-pinned lock; the project
# goes in editable, without resolving anything. Everything is compiled to bytecode as it is
# installed: where PYTHONDONTWRITEBYTECODE is set (as on the machine CI runs on) Python never writes
# a .pyc, so each process compiled dagster, great_expectations and opslake again: 14.7 s to
# import the definitions against 5.9 s from bytecode.
$(VENV)/.installed: requirements.lock pyproject.toml infra/supply_chain/bootstrap.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r infra/supply_chain/bootstrap.txt
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --compile-bytecode --require-hashes -r requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
	$(PY) -m compileall -q -j 0 opslake >/dev/null
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
# The supply-chain gate runs first: pip-audit over every lock (PyPI, bounded by timeouts) and
# the licences of both venvs against infra/supply_chain/licences.toml.
test: install tools
	bash infra/install-services.sh
	bash infra/install-superset.sh
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --compile-bytecode --require-hashes -r infra/spark/requirements.txt
	$(PY) -m infra.supply_chain audit --pip-audit $(TOOLS_VENV)/bin/pip-audit
	$(PY) -m infra.supply_chain licences --quiet --site "$(SUPERSET_SITE)"
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

tools: $(TOOLS_VENV)/.installed

$(TOOLS_VENV)/.installed: infra/supply_chain/requirements.txt | install
	test -x $(TOOLS_VENV)/bin/python || $(UV) venv --quiet --python $(PY) $(TOOLS_VENV)
	VIRTUAL_ENV=$(TOOLS_VENV) $(UV) pip sync --quiet --require-hashes infra/supply_chain/requirements.txt
	touch $@

# Supply chain (docs/supply-chain.md). `lock` and `lock-wheels` need PyPI; the rest do not,
# except `audit`. `lock` keeps every pinned version (uv prefers what the lock holds): to
# upgrade one, `$(UV) pip compile … --upgrade-package NAME` it, then `make lock-wheels`.
lock: install
	$(COMPILE) pyproject.toml --extra test -o requirements.lock
	$(COMPILE) infra/superset/requirements.in -o infra/superset/requirements.txt
	$(COMPILE) infra/spark/requirements.in -o infra/spark/requirements.txt
	$(COMPILE) infra/supply_chain/requirements.in -o infra/supply_chain/requirements.txt
	$(COMPILE) infra/supply_chain/bootstrap.in -o infra/supply_chain/bootstrap.txt
	$(MAKE) --no-print-directory lock-wheels

# Records which files PyPI has for every pinned version (infra/supply_chain/wheels.json),
# which the offline lock check (tests/unit/test_supply_chain.py) reads.
lock-wheels: install
	$(PY) -m infra.supply_chain lock-wheels

check-locks: install
	$(PY) -m infra.supply_chain check-locks

audit: install tools
	$(PY) -m infra.supply_chain audit --pip-audit $(TOOLS_VENV)/bin/pip-audit

sbom: install tools
	$(PY) -m infra.supply_chain sbom --cyclonedx $(TOOLS_VENV)/bin/cyclonedx-py --output $(SBOM)

licences: install
	$(PY) -m infra.supply_chain licences --site "$(SUPERSET_SITE)"

# Rewrites infra/debian-packages.txt's versions from what dpkg has installed here.
debian-pins:
	bash infra/install-services.sh --write-pins

bench: install
	$(PY) -m tests.benchmarks.bench_pipeline
	$(PY) -m tests.benchmarks.bench_ingest
	$(PY) -m tests.benchmarks.bench_batches
	$(PY) -m tests.benchmarks.bench_catalog
	$(PY) -m tests.benchmarks.bench_ml
	$(PY) -m tests.benchmarks.bench_api

lint: install
	$(VENV)/bin/ruff check opslake tests infra
	$(VENV)/bin/ruff format --check opslake tests infra
	$(VENV)/bin/lint-imports

clean:
	rm -rf var .pytest_cache
