# make test | make test-deploy | make try-deploy | make run | make docs | make bench | make token SUB=alice | make package STAGE=prod | make deploy STAGE=prod
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_DIR := devtools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
SOKETI_DIR := devtools/soketi
SOKETI_STAMP := $(SOKETI_DIR)/node_modules/.installed
# ministack, the AWS emulator of tests/deploy: its own venv (it pins its own botocore)
MINISTACK_VENV ?= .venv-ministack
MINISTACK_STAMP := $(MINISTACK_VENV)/.installed
MINISTACK_REQUIREMENTS := tests/deploy/requirements-ministack.txt
STAGE ?= dev
SUB ?= alice

.PHONY: venv node ministack-venv test test-deploy try-deploy run bench token package deploy docs clean

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

# the emulator runs the Lambda functions with this venv's python: the Lambda runtime's (3.11)
$(MINISTACK_STAMP): $(MINISTACK_REQUIREMENTS)
	$(PYTHON) -m venv $(MINISTACK_VENV)
	$(MINISTACK_VENV)/bin/python -m pip install -q --upgrade pip
	$(MINISTACK_VENV)/bin/python -m pip install -q -r $(MINISTACK_REQUIREMENTS)
	touch $@

ministack-venv: $(MINISTACK_STAMP)

test: venv node
	$(PY) -m pytest

# make package STAGE=dev deployed on ministack through CloudFormation, used with stock clients
test-deploy: venv node ministack-venv
	$(PY) -m pytest -m deploy tests/deploy

# the same deployment to keep: ministack on 4566, pusher-js options printed; Ctrl-C stops it
try-deploy: venv ministack-venv
	$(PY) -m tests.deploy --stage $(STAGE)

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
	rm -rf $(VENV) $(MINISTACK_VENV) $(NODE_DIR)/node_modules $(SOKETI_DIR)/node_modules .pytest_cache site
