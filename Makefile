# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps are keyed on pyproject.toml so an edited dependency list reinstalls, and a second run is a no-op.
$(VENV)/.stamp-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[metrics]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-runtime
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.stamp-runtime
install-dev: $(VENV)/.stamp-dev

demo: install
	$(BIN)/vidiff demo --out outputs/demo

test: install-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
