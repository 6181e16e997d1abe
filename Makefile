# hessopt: the two commands of the README.
#   make test   set up .venv (when missing) and run ruff + the full pytest suite
#   make bench  set up .venv and run the main job (quick suite), writing results/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hessopt-installed
# torch first, pinned: a CPU wheel of it is on every machine's disk; an unpinned
# torch would make pip download a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/hessopt bench functions --quick
	$(BIN)/hessopt report

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
