# Everything a developer or CI runs. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# firebase-tools, for the tests' Firebase Auth emulator (tests/auth_emulator.py); needs Node 20+.
FIREBASE_TOOLS_VERSION := 15.34.2
NODE_DIR := .node
NODE_STAMP := $(NODE_DIR)/.installed-$(FIREBASE_TOOLS_VERSION)
EMULATOR_PORT ?= 8086
PORT ?= 8080
HOST ?= 127.0.0.1
OUTBOX_INTERVAL ?= 10

.PHONY: install run bundle test lint requirements bench clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -e '.[dev]'
	touch $(STAMP)

# checkov lives in its own environment: it pins a python-hcl2 that conflicts with ours.
$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==3.3.30'
	touch $(CHECKOV_STAMP)

# The version is in the stamp's name: changing FIREBASE_TOOLS_VERSION reinstalls.
$(NODE_STAMP):
	rm -rf $(NODE_DIR)
	npm install --prefix $(NODE_DIR) --save-exact --no-audit --no-fund --no-update-notifier \
		firebase-tools@$(FIREBASE_TOOLS_VERSION)
	touch $(NODE_STAMP)

install: $(STAMP) $(CHECKOV_STAMP) $(NODE_STAMP)

## Serve the function on http://$(HOST):$(PORT)/ against its own Firestore emulator on
## 127.0.0.1:$(EMULATOR_PORT), running due outbox tasks every OUTBOX_INTERVAL seconds; Ctrl-C
## stops all of it. STRIPE_WEBHOOK_SECRET unset: the development secret. See the README.
run: $(STAMP)
	@HOST=$(HOST) PORT=$(PORT) EMULATOR_PORT=$(EMULATOR_PORT) OUTBOX_INTERVAL=$(OUTBOX_INTERVAL) \
		exec $(BIN)/python -m stripe_ledger.devserver

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The whole suite: lint, types, and every test (the harness starts the emulator itself), in
## two workers, each with its own emulator; a file's tests stay in one worker, so a class's
## function server is started once. A single file runs as well with plain `$(BIN)/pytest`.
test: install lint
	$(BIN)/pytest -n 2 --dist loadfile

## Write dist/function-source.zip, what Terraform deploys: the function, the core, the built-in
## handlers, your handler packages (terraform.tfvars's handler_modules, or HANDLER_MODULES=...)
## and requirements.txt with requirements-handlers.in, every package pinned with its hashes.
bundle: $(STAMP)
	$(BIN)/python -m stripe_ledger.bundle $(if $(HANDLER_MODULES),--handler-modules "$(HANDLER_MODULES)")

## Re-pin requirements.txt (what Cloud Functions installs) from pyproject.toml.
requirements: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.12 --universal \
		--custom-compile-command "make requirements" -o requirements.txt

## The benchmark: prints a table, writes bench/out/results.json and bench/out/latency.png.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(NODE_DIR) .pytest_cache .mypy_cache .ruff_cache
