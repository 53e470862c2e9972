# CSP Portal — `make run` and `make test` each do all of their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := $(BIN)/flask --app app
CHROMIUM := /usr/bin/chromium
HOST ?= 127.0.0.1
PORT ?= 5000
# pytest-xdist worker processes for `make test` (each has its own PostgreSQL database and Redis db)
TEST_WORKERS ?= 2

# the embedded default: SQLite under instance/, mail to the console, plain-http cookies
DEV_ENV := PORTAL_ENV=development PORTAL_INSECURE_COOKIES=1 PORTAL_MAIL_BACKEND=console \
	PORTAL_PLUGINS=demo_provider,demo_payments PORTAL_PROVIDER=demo PORTAL_PAYMENT_GATEWAY=demo
FIRST_PARTY_PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: run test model lint typecheck unit setup translations migrate demo bench vendor chromium clean messages

$(STAMP): pyproject.toml $(FIRST_PARTY_PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet $(foreach p,$(FIRST_PARTY_PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

setup: $(STAMP) translations

translations: $(STAMP)
	$(BIN)/pybabel compile --statistics -d translations 2>&1 | tail -n 2

migrate: setup
	$(DEV_ENV) $(FLASK) portal migrate

demo: migrate
	$(DEV_ENV) $(FLASK) portal demo

run: demo
	$(DEV_ENV) $(FLASK) portal demo-changes --count 8
	@echo "CSP Portal on http://$(HOST):$(PORT)/  (staff area: /staff/) — demo logins are in README.md"
	$(DEV_ENV) HOST=$(HOST) PORT=$(PORT) ./scripts/run-dev.sh

chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup chromium lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS)

# The model-based test of the money loop exploring new journeys (make test runs a fixed set)
model: setup
	PORTAL_MODEL_RANDOM=1 PORTAL_MODEL_EXAMPLES=1000 $(BIN)/pytest -p no:randomly tests/model -k licence_loop
	PORTAL_MODEL_RANDOM=1 PORTAL_MODEL_EXAMPLES=200 $(BIN)/pytest -p no:randomly tests/model -k "not licence_loop"

bench: setup
	$(BIN)/python bench/pages.py
	$(BIN)/python bench/outbox.py
	$(BIN)/python bench/billing.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/provisioning.py

# Re-extract the catalogue after changing user-visible text, then translate translations/es.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o translations/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i translations/messages.pot -d translations --no-fuzzy-matching

vendor:
	./scripts/vendor.sh

clean:
	rm -rf $(VENV) instance test-results
