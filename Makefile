# urbanfabric — two commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GEN := services/lib/urbanfabric/v1
PROTOS := $(wildcard protos/urbanfabric/v1/*.proto)
export PYTHONPATH := $(CURDIR):$(CURDIR)/services/lib

.PHONY: train-gpu all install system-deps protos docs-schema lint lint-protos lint-imports typecheck test test-unit test-integration test-e2e test-faults test-deploy image-base test-image demo screenshots up down status bench clean train-segmentation train-roof train-height intensity-table

all: install protos

$(STAMP): requirements.txt requirements-deploy.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -r requirements-deploy.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(STAMP)

# System packages the tests use, from apt without recommends: nginx runs the chart's model
# gateway (tests/deploy), Chromium the browser tests (tests/browser) and docs/screenshots.py.
# Each is skipped with a warning where apt-get cannot run (no apt-get, not root and no sudo),
# and the tests that need it skip with the reason.
# $(call apt_install,COMMAND,PACKAGE,WHAT SKIPS WITHOUT IT)
define apt_install
	@command -v $(1) >/dev/null || test -x /usr/sbin/$(1) || { \
	  apt="apt-get"; [ "$$(id -u)" = 0 ] || apt="sudo -n apt-get"; \
	  if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$apt install -y -q --no-install-recommends $(2) >/dev/null 2>&1 || \
	    { $$apt update -q >/dev/null 2>&1 && $$apt install -y -q --no-install-recommends $(2) >/dev/null 2>&1; } || \
	    echo "warning: could not install $(2); $(3) will skip"; \
	  else echo "warning: $(1) is missing and apt-get cannot run here; $(3) will skip"; fi; }
endef

system-deps:
	$(call apt_install,nginx,nginx-light,the model-gateway test)
	$(call apt_install,chromium,chromium,the browser tests)

# Python stubs are generated, never edited or committed.
$(GEN)/.stamp: $(PROTOS) $(STAMP)
	mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=services/lib \
	  --grpc_python_out=services/lib --pyi_out=services/lib $(PROTOS)
	touch $(GEN)/__init__.py $@

protos: $(GEN)/.stamp

# docs/schema.md is generated from the table's one definition (tests/unit/outputs/test_schema.py
# fails when it is stale).
docs-schema: $(STAMP)
	$(BIN)/python -m urbanfabric.outputs.schema > docs/schema.md

lint-protos: $(STAMP)
	$(BIN)/buf lint protos

# The import contract (pyproject.toml [tool.importlinter]) and mypy on the core; see
# docs/architecture.md, "Import contract".
lint-imports: $(STAMP) protos
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP) protos
	$(BIN)/mypy

lint: lint-protos lint-imports typecheck

test: install protos lint system-deps
	$(BIN)/python -m pytest -q tests

test-unit: install protos
	$(BIN)/python -m pytest -q tests/unit

test-integration: install protos
	$(BIN)/python -m pytest -q tests/integration

test-e2e: install protos
	$(BIN)/python -m pytest -q tests/e2e

# The CI fault test alone (issue 19, item 3; also part of `make test` through tests/e2e):
# kill -9 of every stack component during jobs, each table compared with a fault-free run's.
# FAULTS_JSON=bench/results/faults_ci.json also writes the runs and their extra time there.
test-faults: install protos
	URBANFABRIC_FAULTS_JSON=$(FAULTS_JSON) $(BIN)/python -m pytest -q -s tests/e2e/test_faults.py

test-deploy: install protos system-deps
	$(BIN)/python -m pytest -q tests/deploy

# Build images with the one Dockerfile and start them, without a daemon (buildah, Debian's
# package; root). Minutes: not part of `make test`. tests/deploy/test_image_build.py says why.
image-base:
	tests/deploy/image_base.sh

test-image: install protos image-base
	URBANFABRIC_IMAGE_BUILD=1 OMP_NUM_THREADS=1 nice -n 10 $(BIN)/python -m pytest -q tests/deploy/test_image_build.py

demo: install protos
	$(BIN)/urbanfabric demo

# The README's screenshots (docs/img/) from a fresh demo job and the stack it ran on, kept up for
# the Prefect pages, then stopped (docs/development.md, "Browser tests and screenshots").
screenshots: install protos system-deps
	KEEP=1 $(BIN)/urbanfabric demo && $(BIN)/python docs/screenshots.py; rc=$$?; $(BIN)/urbanfabric stack down; exit $$rc

up: install protos
	$(BIN)/urbanfabric stack up

status:
	$(BIN)/urbanfabric stack status

down:
	$(BIN)/urbanfabric stack down

bench: install protos
	$(BIN)/python bench/run_all.py

train-segmentation: install
	$(BIN)/python -m models.footprint_unet.train --data ../shared/data/footprints/xiamen-z18 --out models/footprint_unet/v1 --minutes 75 --resume

train-roof: install
	$(BIN)/python -m models.roof_material.train --data ../shared/data/roofs/caribbean-material --out models/roof_material/v1

train-height: install
	$(BIN)/python -m models.height_xgb.train --out models/height_xgb/v1

intensity-table: install
	$(BIN)/python -m models.material_intensity.build

clean:
	rm -rf $(GEN) .pytest_cache out

# On a lent GPU: train the shipped footprint members for MINUTES, then benchmark inference
# (models/train_gpu.py; results under .train/gpu/, evaluate on the CPU before shipping).
MINUTES ?= 9
train-gpu: install protos
	$(BIN)/python -m models.train_gpu --minutes $(MINUTES) --out .train/gpu
