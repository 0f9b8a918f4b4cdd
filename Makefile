# Entry points: `make demo` and `make test` (see README). Everything runs from .venv,
# in which the working tree is linked as the collection ai_infra.node_recovery.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCALCLUSTER := $(PY) -m tools.localcluster

.PHONY: venv binaries cluster-up cluster-down demo test unit integration lint sanity bench

$(STAMP): requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# Link (not copy) the working tree where ansible-core looks for collections on sys.path.
venv: $(STAMP)
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  mkdir -p "$$site/ansible_collections/ai_infra"; \
	  ln -sfn "$(CURDIR)" "$$site/ansible_collections/ai_infra/node_recovery"

binaries: venv
	$(LOCALCLUSTER) build

cluster-up: venv
	$(LOCALCLUSTER) up

cluster-down: venv
	$(LOCALCLUSTER) down

demo: venv
	$(LOCALCLUSTER) up
	$(PY) -m tools.demo

unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check plugins tools tests
	$(VENV)/bin/yamllint -s .

integration: venv binaries
	$(PY) -m pytest -q tests/integration

test: venv binaries lint
	$(PY) -m pytest -q tests/unit tests/integration

bench: venv binaries
	$(PY) -m tools.bench
