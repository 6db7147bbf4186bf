# The README's commands. Each creates .venv when missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build first so pip never resolves a multi-GB CUDA build.
TORCH ?= torch==2.13.0
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test typecheck bench lint clean

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
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest

# mypy checks modules by their installed names (imgrag.pipeline...), which the editable
# install's import hook hides from it: a tree of links shaped like the wheel stands in.
TYPED := build/typecheck
typecheck: $(STAMP_TEST)
	rm -rf $(TYPED)/imgrag && mkdir -p $(TYPED)/imgrag
	ln -s $(CURDIR)/pipeline/_package/__init__.py $(CURDIR)/pipeline/_package/py.typed $(TYPED)/imgrag/
	ln -s $(CURDIR)/pipeline $(CURDIR)/connectors $(TYPED)/imgrag/
	cd $(TYPED) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p imgrag

bench: $(STAMP_TEST)
	$(BIN)/python -m bench

lint: $(STAMP_TEST)
	$(BIN)/ruff check pipeline connectors tests bench
	$(BIN)/ruff format --check pipeline connectors tests bench

clean:
	rm -rf $(VENV) .imgrag .pytest_cache
