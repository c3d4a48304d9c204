# m10jobs — see README.md.  Every target installs what it needs.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: all venv deps test demo bench lint clean

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

deps: venv
	scripts/dev/install-deps.sh $(BIN)/pip

test: deps
	$(BIN)/ruff check m10jobs tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

demo: deps
	$(BIN)/python -m m10jobs.devenv.demo

bench: deps
	$(BIN)/python -m benchmarks.run $(BENCH)

lint: venv
	$(BIN)/ruff check m10jobs tests benchmarks
	$(BIN)/ruff format --check m10jobs tests benchmarks || true

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
