# The two commands: `make run` starts the gateway, `make test` runs every test.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test venv clean

$(VENV)/.base-installed: requirements/base.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is required") if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/base.txt
	@touch $@

$(VENV)/.test-installed: $(VENV)/.base-installed requirements/test.txt
	$(BIN)/python -m pip install --quiet -r requirements/test.txt
	@touch $@

venv: $(VENV)/.base-installed

# Secrets for this machine, written once; the environment overrides them.
.env: | $(VENV)/.base-installed
	$(BIN)/python -c 'import secrets; from cryptography.fernet import Fernet; \
print(f"SECRET_KEY={secrets.token_urlsafe(48)}"); \
print(f"ACCOUNTS_KEY_PEPPER={secrets.token_urlsafe(32)}"); \
print(f"PROXY_SECRETS_KEY={Fernet.generate_key().decode()}")' > $@
	@chmod 600 $@

run: $(VENV)/.base-installed .env
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py gateway_bootstrap --host $(HOST) --port $(PORT)
	exec $(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# What CI checks before the tests: lint, formatting and types (config in pyproject.toml).
.PHONY: lint
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy accounts billing cachestore proxy gateway conftest.py

clean:
	rm -rf $(VENV) var .pytest_cache

# The benchmark (see bench/README.md). `make bench`: the gateway against direct,
# LiteLLM and Portkey on one core each (the README's table; the peers are installed
# on first use). `make bench-scenarios`: json, stream and cache at several concurrencies.
# .PHONY because the bench/ directory would otherwise make the target look up to date.
.PHONY: bench bench-scenarios
bench: $(VENV)/.base-installed
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

bench-scenarios: $(VENV)/.base-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The long fuzz of /v1 from its OpenAPI schema (proxy/tests/test_fuzz.py): random
# examples, FUZZ_EXAMPLES per operation and mode; `make test` runs a short, fixed pass.
FUZZ_EXAMPLES ?= 2000
.PHONY: fuzz
fuzz: $(VENV)/.test-installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz proxy/tests/test_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)
