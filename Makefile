# The README's commands. Each creates .venv when missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build first so pip never resolves a multi-GB CUDA build.
TORCH ?= torch==2.13.0
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[local]"
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[local,dev]"
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	mkdir -p inbox
	IMGRAG_CONFIG=$${IMGRAG_CONFIG:-configs/default.toml} $(BIN)/imgrag watch ./inbox

test: $(STAMP_TEST)
	$(BIN)/ruff check pipeline connectors tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP_TEST)
	$(BIN)/python -m bench

lint: $(STAMP_TEST)
	$(BIN)/ruff check pipeline connectors tests bench
	$(BIN)/ruff format --check pipeline connectors tests bench

clean:
	rm -rf $(VENV) .imgrag .pytest_cache
