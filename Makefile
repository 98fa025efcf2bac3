# One command per habit. Every target sets up .venv first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
MODEL ?= $(MONOSCOPE_MODEL)
SAE ?= $(MONOSCOPE_SAES)
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint format demo serve bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first and alone: with it in place nothing resolves a newer CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

# Front-end libraries (htmx) from the npm registry, exactly as package-lock.json pins them.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

setup: $(STAMP) node_modules/.package-lock.json

# Every tier, one worker per core (pytest-xdist); the 25 slowest tests are listed at the end.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n auto --durations=25 $(PYTEST_ARGS)

# What a change needs in a few minutes: no training, browser or PostgreSQL runs.
test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n auto -m "not slow and not browser and not postgres" -x \
		$(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check app tests bench migrations
	$(VENV)/bin/ruff format --check app tests bench migrations
	$(VENV)/bin/mypy app

format: setup
	$(VENV)/bin/ruff format app tests bench migrations
	$(VENV)/bin/ruff check --fix app tests bench migrations

demo: setup
	$(VENV)/bin/monoscope demo

serve: setup
	MONOSCOPE_MODEL="$(MODEL)" MONOSCOPE_SAES="$(SAE)" $(VENV)/bin/monoscope serve

bench: setup
	$(PY) -m bench.encode
	$(PY) -m bench.steer
	$(PY) -m bench.batch_invariance
	$(PY) -m bench.harvest

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
