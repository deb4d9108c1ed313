# make test | make run | make docs | make bench | make token SUB=alice | make package STAGE=prod | make deploy STAGE=prod
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_DIR := devtools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
SOKETI_DIR := devtools/soketi
SOKETI_STAMP := $(SOKETI_DIR)/node_modules/.installed
STAGE ?= dev
SUB ?= alice

.PHONY: venv node test run bench token package deploy docs clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# soketi: `npm ci` (npm 11) rejects this lock file for its optional platform builds of
# msgpackr-extract; `npm install --no-save` installs the locked tree without rewriting it.
$(SOKETI_STAMP): $(SOKETI_DIR)/package.json $(SOKETI_DIR)/package-lock.json
	cd $(SOKETI_DIR) && npm install --no-save --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP) $(SOKETI_STAMP)

test: venv node
	$(PY) -m pytest

run: venv node
	$(PY) -m devtools.stack

bench: venv node
	$(PY) -m bench

token: venv
	@$(PY) -m devtools.dev_issuer token $(SUB)

# CloudFormation (or FORMAT=terraform) template + Lambda zip in build/$(STAGE)/, size-checked
package: venv
	$(PY) -m infra.package --stage $(STAGE) $(if $(FORMAT),--format $(FORMAT))

# infrastructure stack, chalice deploy, $$connect authorizer, endpoints (needs AWS credentials)
deploy: venv
	$(PY) -m infra.deploy --stage $(STAGE)

# the documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or page fails
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules $(SOKETI_DIR)/node_modules .pytest_cache site
