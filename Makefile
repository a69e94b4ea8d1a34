# Quickstart targets. Each creates .venv on first use (python3 >= 3.11, pip and make are all it needs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench bench-peers clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flightdeck demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The static checks CI runs before the tests: lint, types of the engine, and the import contracts (pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench

# The peer frameworks (LangGraph, OpenAI Agents SDK, Pydantic AI) in their own venv, so `bench peers` can time
# them side by side with Flightdeck in one run. Needs ../shared/bench-peers.
PEERS_REQ := ../shared/bench-peers/requirements-bench.txt
.venv-bench/.installed: $(PEERS_REQ) pyproject.toml
	$(PY) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --upgrade pip
	.venv-bench/bin/pip install --quiet -r $(PEERS_REQ) -e .
	touch $@

bench-peers: .venv-bench/.installed
	.venv-bench/bin/python -m bench peers guardrails

clean:
	rm -rf $(VENV) .venv-bench .flightdeck .flightdeck-demo build *.egg-info
