# Entry points: `make demo` and `make test` (see README). Everything runs from .venv,
# in which the working tree is linked as the collection ai_infra.node_recovery.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCALCLUSTER := $(PY) -m tools.localcluster

.PHONY: venv browser binaries cluster-up cluster-down demo test unit integration lint sanity bench
SANITY_ROOT := tests/output/sanity/ansible_collections/ai_infra/node_recovery

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

# The browser test of the HTML reports (tests/integration/test_report_browser.py) renders them in Debian's headless
# Chromium through its chromedriver: installed here when missing (as root, else through sudo), quietly and without
# questions, so a fresh machine runs the test instead of skipping it. Where it cannot be installed, the test skips
# and says why.
CHROMIUM_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  echo "installing $(CHROMIUM_PACKAGES) for the browser test of the reports"; \
	  if ! { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	         $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	           $(CHROMIUM_PACKAGES) >/dev/null; }; then \
	    echo "WARNING: $(CHROMIUM_PACKAGES) could not be installed: the browser test of the reports will skip" >&2; \
	  fi

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
	$(VENV)/bin/ruff check plugins extensions tools tests
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/ansible-lint --offline -q
	$(VENV)/bin/antsibull-changelog lint

# ansible-test needs the collection under ansible_collections/<namespace>/<name>: test a copy of the
# tracked files there (the shipped content only; tools/ and tests/ are not part of the collection).
sanity: venv
	rm -rf tests/output/sanity
	mkdir -p $(SANITY_ROOT)
	git ls-files -z plugins extensions roles playbooks meta galaxy.yml README.md COPYING requirements.txt .gitignore \
	  | xargs -0 cp --parents -t $(SANITY_ROOT)
	cd $(SANITY_ROOT) && git init -q . && git add -A
	$(PY) tools/ansible_test_pip.py install
	cd $(SANITY_ROOT) && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ansible-test sanity --python 3.11 --venv --color no

# The integration suite shares one cluster (each test makes its own nodes and namespace), so test
# files run in parallel; the cluster is stopped afterwards unless it was already up.
INTEGRATION_WORKERS ?= 3
integration: venv binaries browser
	@if $(LOCALCLUSTER) status >/dev/null 2>&1; then keep=1; else keep=0; $(LOCALCLUSTER) up || exit 1; fi; \
	  KEEP_LOCALCLUSTER=1 $(PY) -m pytest -q -n $(INTEGRATION_WORKERS) --dist loadfile tests/integration; rc=$$?; \
	  if [ $$keep = 0 ]; then $(LOCALCLUSTER) down; fi; exit $$rc

test: venv browser binaries lint sanity unit integration

bench: venv binaries
	$(PY) -m tools.bench
