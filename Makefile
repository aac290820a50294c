# Set-up is part of every target: a fresh machine needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

$(BIN)/finvae: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "finvae needs Python >= 3.11 (its tested pins do), and $(PYTHON) is older or missing; run: make PYTHON=python3.11 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,skfolio,dask,bench]"
	touch $@

run: $(BIN)/finvae
	$(BIN)/finvae run

test: $(BIN)/finvae
	$(BIN)/python -m pytest -q

lint: $(BIN)/finvae
	$(BIN)/ruff check .
