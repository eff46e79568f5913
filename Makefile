# The interface: `make run` plays the demo end to end, `make test` runs every test.
# Each target installs what it needs: uv (through pip, when missing) and the locked workspace.
SHELL := /bin/bash
PYTHON ?= python3
export UV_PYTHON_DOWNLOADS := never
# The interpreter itself, not a shim in front of it: uv run compares the two.
export UV_PYTHON := $(shell $(PYTHON) -c "import sys; print(sys.executable)")
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)

.PHONY: manifests docs run up test test-unit lint format schemas bench bench-ingest bench-feature bench-chaos bench-scale sync clean browser

$(CURDIR)/.tools/uv/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.tools/uv uv

sync: $(UV)
	$(UV) sync --locked --quiet

run: sync  ## the main job: the whole MLOps loop on the embedded stack
	$(UV) run --no-sync conveyor demo

up: sync  ## start the stack and keep it running for your own traffic
	$(UV) run --no-sync conveyor up

# Debian's chromium, which the browser test drives through Playwright (whose own browser
# download is not used): installed when missing, as root directly or else through sudo.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Two workers, each with a database server of its own, take a test at a time (each test has a
# broker of its own; the end-to-end tests all go to one worker: tests/conftest.py): most of the
# suite's time is spent waiting on the broker (consumer groups joining), not computing.
test: sync browser  ## unit, integration and end-to-end tests
	$(UV) run --no-sync pytest -ra -n 2 --dist loadgroup

test-unit: sync
	$(UV) run --no-sync pytest -ra tests/unit

lint: sync
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy libs services
	$(UV) run --no-sync hadolint Dockerfile

format: sync
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

docs: sync  ## build the docs (strict) into site/
	NO_MKDOCS_2_WARNING=1 $(UV) run --no-sync mkdocs build --strict

manifests: sync  ## render deploy/kubernetes/{operators,external}/ from their values files
	for profile in operators external; do \
	  $(UV) run --no-sync conveyor kube render --values deploy/kubernetes/values-$$profile.yaml \
	    --out deploy/kubernetes/$$profile || exit 1; done

schemas: sync  ## export JSON Schemas, the AsyncAPI document, the HTTP APIs and the reference pages (schemas/, docs/)
	$(UV) run --no-sync python -m conveyor_contracts.schemas export
	$(UV) run --no-sync python tools/http_reference.py export
	$(UV) run --no-sync python tools/reference.py export

# ab.py compares two revisions given on its command line; chaos.py and scale.py run for many
# minutes (six restarts; replicas joining, dying and leaving): each has its own invocation.
# common.py and ledger.py are what the others share.
bench: sync
	@for b in $(filter-out bench/common.py bench/ledger.py bench/ab.py bench/chaos.py bench/scale.py,$(wildcard bench/*.py)); do echo "== $$b"; $(UV) run --no-sync python $$b || exit 1; done

bench-ingest: sync  ## ingest's records/s from Kafka beside a plain COPY; ARGS="--records 20000"
	$(UV) run --no-sync python bench/ingest.py $(ARGS)

bench-feature: sync  ## enrichment throughput and latency beside the relay; ARGS="--duration 10"
	$(UV) run --no-sync python bench/feature.py $(ARGS)

bench-chaos: sync  ## every message accounted for through kill -9 of each service; ARGS="--messages 5000"
	$(UV) run --no-sync python bench/chaos.py $(ARGS)

bench-scale: sync  ## every request accounted for while replicas join, die and leave; ARGS="--short"
	$(UV) run --no-sync python bench/scale.py $(ARGS)

clean:
	rm -rf .conveyor .pytest_cache .ruff_cache .mypy_cache
